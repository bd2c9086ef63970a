import pytest
from retry import RetryError, retry


def flaky(failures):
    calls = {"n": 0}

    def operation():
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionError(f"fail {calls['n']}")
        return calls["n"]

    return operation


def test_succeeds_after_failures():
    assert retry(flaky(2), attempts=3) == 3


def test_gives_up():
    with pytest.raises(RetryError) as info:
        retry(flaky(5), attempts=2)
    assert info.value.attempts == 2
    assert str(info.value.last) == "fail 2"


def test_other_errors_propagate():
    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        retry(boom)


def test_bad_attempts():
    with pytest.raises(ValueError):
        retry(lambda: 1, attempts=0)
