import pytest
from inventory import Inventory


@pytest.fixture
def inv():
    inventory = Inventory()
    inventory.add("apple", 5)
    inventory.add("pear", 2)
    inventory.add("fig")
    return inventory


def test_add_and_total(inv):
    assert inv.total() == 8
    inv.add("apple", 3)
    assert inv.stock["apple"] == 8


def test_remove(inv):
    inv.remove("apple", 2)
    assert inv.stock["apple"] == 3
    inv.remove("fig")
    assert "fig" not in inv.stock


def test_remove_too_many(inv):
    with pytest.raises(KeyError):
        inv.remove("pear", 3)
    with pytest.raises(KeyError):
        inv.remove("kiwi")


def test_low_stock(inv):
    assert inv.low_stock() == ["fig", "pear"]
    assert inv.low_stock(threshold=1) == ["fig"]


def test_bad_quantity(inv):
    with pytest.raises(ValueError):
        inv.add("apple", 0)
