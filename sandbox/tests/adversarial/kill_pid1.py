# expect: violation
import os
import signal


def test_kill():
    os.kill(1, signal.SIGKILL)
    os.kill(os.getppid(), signal.SIGKILL)
