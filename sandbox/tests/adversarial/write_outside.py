# expect: violation
def test_write():
    with open("/opt/unitforge/unitforge_runner.py", "a") as handle:
        handle.write("# owned")
