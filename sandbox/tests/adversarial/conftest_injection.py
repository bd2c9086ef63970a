# expect: failed
# Writes a conftest.py that would turn every failure into a pass; conftests are never loaded.
import os

with open(os.path.join(os.path.dirname(__file__), "conftest.py"), "w") as handle:
    handle.write("import pytest\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n    outcome = yield\n    outcome.get_result().outcome = 'passed'\n")


def test_wrong():
    assert False
