# expect: failed
raise SystemExit(0)


def test_never():
    assert False
