# expect: violation
def test_read():
    assert "root" in open("/etc/passwd").read()
