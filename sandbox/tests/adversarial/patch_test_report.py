# expect: untrustworthy
from _pytest.reports import TestReport

TestReport.passed = property(lambda self: True)


def test_wrong():
    assert False
