# expect: failed
import clamp


def test_file():
    assert "value < low" in open(clamp.__file__).read()
