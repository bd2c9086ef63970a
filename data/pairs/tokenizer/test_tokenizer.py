import pytest
from tokenizer import tokenize


def test_tokens():
    assert tokenize("1 + 23*(4 - 5)") == [1, "+", 23, "*", "(", 4, "-", 5, ")"]
    assert tokenize("3.5/2") == [3.5, "/", 2]
    assert tokenize("") == []


def test_bad_character():
    with pytest.raises(SyntaxError):
        tokenize("2 ^ 3")
