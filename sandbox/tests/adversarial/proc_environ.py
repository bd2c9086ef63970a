# expect: violation
def test_proc():
    assert open("/proc/1/environ").read()
