# expect: timed_out
from clamp import clamp


def test_spin():
    while True:
        pass
