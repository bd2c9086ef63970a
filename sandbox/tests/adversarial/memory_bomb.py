# expect: failed
# Allocates without bound: the per-run address-space limit turns it into a MemoryError.
from clamp import clamp


def test_memory_bomb():
    hoard = []
    while True:
        hoard.append(bytearray(64 << 20))
    assert clamp(1, 0, 2) == 1
