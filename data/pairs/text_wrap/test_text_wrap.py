import pytest
from text_wrap import wrap


def test_wrap():
    assert wrap("the quick brown fox", 10) == ["the quick", "brown fox"]
    assert wrap("a b c", 3) == ["a b", "c"]


def test_exact_fit():
    assert wrap("abc def", 7) == ["abc def"]
    assert wrap("abc def", 6) == ["abc", "def"]


def test_long_word_and_empty():
    assert wrap("elephant", 3) == ["elephant"]
    assert wrap("   ", 5) == []


def test_bad_width():
    with pytest.raises(ValueError):
        wrap("x", 0)
