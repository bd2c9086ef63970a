# expect: failed
# print() is captured in memory by pytest: the address-space limit stops it.
def test_flood():
    while True:
        print("y" * 65536)
