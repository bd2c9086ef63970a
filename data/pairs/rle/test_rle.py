from rle import decode, encode


def test_encode():
    assert encode("aaabccdddd") == "3a1b2c4d"
    assert encode("") == ""
    assert encode("z") == "1z"


def test_decode():
    assert decode("3a1b2c4d") == "aaabccdddd"
    assert decode("12x") == "x" * 12


def test_round_trip():
    for text in ["hello", "aaaaaaaaaaaab", "abcabc"]:
        assert decode(encode(text)) == text
