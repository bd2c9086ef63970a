import pytest
from moving_average import moving_average


def test_simple_window():
    assert moving_average([1, 2, 3, 4, 5], 2) == [1.5, 2.5, 3.5, 4.5]
    assert moving_average([2, 4, 6], 3) == [4.0]


def test_window_larger_than_values():
    assert moving_average([1, 2], 3) == []


def test_window_of_one_is_identity():
    assert moving_average([3, 1, 4], 1) == [3, 1, 4]


def test_bad_window():
    with pytest.raises(ValueError):
        moving_average([1], 0)
