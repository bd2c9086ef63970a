from vowels import count_vowels, first_vowel_index, remove_vowels


def test_count():
    assert count_vowels("Education") == 5
    assert count_vowels("rhythm") == 0


def test_remove():
    assert remove_vowels("Programming") == "Prgrmmng"
    assert remove_vowels("AEIOU") == ""


def test_first_index():
    assert first_vowel_index("strength") == 3
    assert first_vowel_index("Apple") == 0
    assert first_vowel_index("xyz") is None
