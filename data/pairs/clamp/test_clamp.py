import pytest
from clamp import clamp


def test_inside_is_unchanged():
    assert clamp(5, 0, 10) == 5


def test_below_and_above():
    assert clamp(-3, 0, 10) == 0
    assert clamp(42, 0, 10) == 10


def test_boundaries_are_inclusive():
    assert clamp(0, 0, 10) == 0
    assert clamp(10, 0, 10) == 10


def test_bad_interval():
    with pytest.raises(ValueError):
        clamp(1, 5, 2)
