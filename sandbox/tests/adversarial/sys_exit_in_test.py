# expect: failed
import sys
from clamp import clamp


def test_exit():
    sys.exit(0)
    assert clamp(1, 0, 2) == 1
