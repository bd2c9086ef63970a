import pytest
from leap_year import days_in_month, is_leap


@pytest.mark.parametrize("year, leap", [(2024, True), (2023, False), (1900, False), (2000, True), (2100, False)])
def test_is_leap(year, leap):
    assert is_leap(year) is leap


def test_days_in_month():
    assert days_in_month(2024, 2) == 29
    assert days_in_month(2023, 2) == 28
    assert days_in_month(2023, 4) == 30
    assert days_in_month(2023, 12) == 31
    assert days_in_month(2023, 1) == 31


@pytest.mark.parametrize("month", [0, 13])
def test_bad_month(month):
    with pytest.raises(ValueError):
        days_in_month(2023, month)
