import pytest
from interval_merge import merge_intervals, total_covered


def test_merge():
    assert merge_intervals([(1, 3), (2, 6), (8, 10), (15, 18)]) == [(1, 6), (8, 10), (15, 18)]
    assert merge_intervals([(5, 6), (1, 2)]) == [(1, 2), (5, 6)]


def test_touching_and_nested():
    assert merge_intervals([(1, 4), (4, 5)]) == [(1, 5)]
    assert merge_intervals([(1, 10), (2, 3)]) == [(1, 10)]
    assert merge_intervals([]) == []


def test_total():
    assert total_covered([(0, 2), (1, 5), (10, 11)]) == 6


def test_bad_interval():
    with pytest.raises(ValueError):
        merge_intervals([(3, 1)])
