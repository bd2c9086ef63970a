# expect: violation
# A fork bomb: every fork is refused by the audit hook (and the container's pids limit).
import os
from clamp import clamp


def test_fork_bomb():
    while True:
        os.fork()
    assert clamp(1, 0, 2) == 1
