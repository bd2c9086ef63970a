import pytest
from queue_sim import BoundedQueue


def test_fifo_and_capacity():
    q = BoundedQueue(2)
    assert q.offer("a")
    assert q.offer("b")
    assert not q.offer("c")
    assert q.dropped == 1
    assert q.poll() == "a"
    assert q.offer("d")
    assert q.drain() == ["b", "d"]
    assert q.poll() is None


def test_bad_capacity():
    with pytest.raises(ValueError):
        BoundedQueue(0)
