from password_policy import is_strong, password_problems


def test_strong_password():
    assert password_problems("Secur3!pass") == []
    assert is_strong("Secur3!pass")


def test_each_problem():
    assert password_problems("Sh0rt!") == ["too short"]
    assert password_problems("NoDigits!!") == ["no digit"]
    assert password_problems("lower3case!") == ["no uppercase letter"]
    assert password_problems("NoSpecial12") == ["no special character"]


def test_exact_minimum_length():
    assert password_problems("Abcde1!x") == []
    assert password_problems("Abcd1!x", min_length=7) == []
    assert not is_strong("")
