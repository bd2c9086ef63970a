from json_path import get_path

DOC = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None, "flag": False}


def test_found():
    assert get_path(DOC, "a.b.0.c") == 1
    assert get_path(DOC, "a.b.1.c") == 2
    assert get_path(DOC, "flag") is False


def test_missing_uses_default():
    assert get_path(DOC, "a.x") is None
    assert get_path(DOC, "a.b.2.c", default="d") == "d"
    assert get_path(DOC, "a.b.first", default=0) == 0
    assert get_path(DOC, "flag.deeper", default=-1) == -1


def test_present_none_is_not_default():
    assert get_path(DOC, "n", default="d") is None
