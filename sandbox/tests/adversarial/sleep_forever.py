# expect: timed_out
import time


def test_sleep():
    time.sleep(10**9)
