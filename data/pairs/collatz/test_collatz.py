import pytest
from collatz import collatz_steps, longest_below


def test_steps():
    assert collatz_steps(1) == 0
    assert collatz_steps(2) == 1
    assert collatz_steps(6) == 8
    assert collatz_steps(27) == 111


def test_longest_below():
    assert longest_below(10) == 9
    assert longest_below(2) == 1


def test_invalid():
    with pytest.raises(ValueError):
        collatz_steps(0)
