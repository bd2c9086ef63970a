import pytest
from flatten import chunk, flatten


def test_flatten():
    assert flatten([1, [2, [3, (4, 5)]], 6]) == [1, 2, 3, 4, 5, 6]
    assert flatten([]) == []
    assert flatten(["ab", ["c"]]) == ["ab", "c"]


def test_chunk():
    assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunk([1, 2], 1) == [[1], [2]]
    assert chunk([], 3) == []


def test_chunk_bad_size():
    with pytest.raises(ValueError):
        chunk([1], 0)
