import pytest
from matrix import identity, multiply, transpose


def test_transpose():
    assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]
    assert transpose([]) == []


def test_multiply():
    assert multiply([[1, 2], [3, 4]], [[5, 6], [7, 8]]) == [[19, 22], [43, 50]]


def test_identity_is_neutral():
    m = [[2, -1], [0, 3]]
    assert multiply(m, identity(2)) == m
    assert identity(3)[1] == [0, 1, 0]


def test_incompatible():
    with pytest.raises(ValueError):
        multiply([[1, 2]], [[1, 2]])
