import pytest
from histogram import histogram


def test_even_bins():
    assert histogram([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 2, 0, 10) == [5, 5]


def test_upper_edge_goes_to_last_bin():
    assert histogram([10], 5, 0, 10) == [0, 0, 0, 0, 1]
    assert histogram([0], 5, 0, 10) == [1, 0, 0, 0, 0]


def test_out_of_range_ignored():
    assert histogram([-1, 11, 5], 2, 0, 10) == [0, 1]


@pytest.mark.parametrize("bins, low, high", [(0, 0, 1), (2, 1, 1), (2, 2, 1)])
def test_bad_arguments(bins, low, high):
    with pytest.raises(ValueError):
        histogram([], bins, low, high)
