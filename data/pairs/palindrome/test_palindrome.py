from palindrome import is_palindrome, normalise


def test_normalise():
    assert normalise("A man, a plan!") == "amanaplan"


def test_palindromes():
    assert is_palindrome("racecar")
    assert is_palindrome("A man, a plan, a canal: Panama")
    assert is_palindrome("")
    assert is_palindrome("x")


def test_not_palindromes():
    assert not is_palindrome("abca")
    assert not is_palindrome("ab")
    assert not is_palindrome("palindrome")
