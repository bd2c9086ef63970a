# expect: failed
import inspect
import clamp


def test_source():
    assert "value < low" in inspect.getsource(clamp)
