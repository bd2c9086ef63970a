# expect: violation
# Starts a daemon through _posixsubprocess.fork_exec, which raises no audit event in Python 3.11,
# to tamper with the next job's files. The runner replaces fork_exec; in a container the server
# would also find and kill any process left behind.
import os
import _posixsubprocess
from clamp import clamp

DAEMON = "import os, time\nwhile True:\n    open(os.path.join(os.getcwd(), 'test_clamp.py'), 'w').write('def test_tampered():\\n    assert False\\n')\n    time.sleep(0.01)\n"


def test_daemon():
    r, w = os.pipe()
    exe = b"/usr/bin/python3"
    _posixsubprocess.fork_exec([exe, b"-c", DAEMON.encode()], [exe], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w, True, True, 0, None, None, None, -1, None, False)
    assert clamp(5, 0, 10) == 5
