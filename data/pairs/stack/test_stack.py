import pytest
from stack import Stack


def test_lifo_order():
    s = Stack()
    for item in [1, 2, 3]:
        s.push(item)
    assert len(s) == 3
    assert s.pop() == 3
    assert s.peek() == 2
    assert s.pop() == 2
    assert s.pop() == 1
    assert s.is_empty()


def test_empty_stack():
    s = Stack()
    assert s.peek() is None
    assert s.is_empty()
    with pytest.raises(IndexError):
        s.pop()
