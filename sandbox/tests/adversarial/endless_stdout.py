# expect: failed
# Writes straight to file descriptor 1 without end: the per-run file-size limit stops it.
import os


def test_flood():
    while True:
        os.write(1, b"x" * 65536)
