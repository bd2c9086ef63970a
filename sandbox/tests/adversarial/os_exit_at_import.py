# expect: crashed
import os

os._exit(0)


def test_never():
    assert False
