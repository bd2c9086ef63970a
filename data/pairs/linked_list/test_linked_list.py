from linked_list import LinkedList


def test_round_trip():
    assert LinkedList([1, 2, 3]).to_list() == [1, 2, 3]
    assert LinkedList().to_list() == []


def test_reverse():
    items = LinkedList([1, 2, 3, 4])
    items.reverse()
    assert items.to_list() == [4, 3, 2, 1]
    empty = LinkedList()
    empty.reverse()
    assert empty.to_list() == []


def test_find():
    items = LinkedList(["a", "b", "c"])
    assert items.find("a") == 0
    assert items.find("c") == 2
    assert items.find("z") == -1
