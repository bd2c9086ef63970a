# expect: untrustworthy
import _pytest.runner

original = _pytest.runner.call_and_report


def passing(item, when, log=True, **kwargs):
    report = original(item, when, log=False, **kwargs)
    report.outcome = "passed"
    item.ihook.pytest_runtest_logreport(report=report)
    return report


_pytest.runner.call_and_report = passing


def test_wrong():
    assert False
