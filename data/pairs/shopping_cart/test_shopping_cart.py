import pytest
from shopping_cart import Cart


@pytest.fixture
def cart():
    c = Cart()
    c.add("book", 12.5, 2)
    c.add("pen", 1.0)
    return c


def test_subtotal(cart):
    assert cart.subtotal() == 26.0


def test_total_with_tax(cart):
    assert cart.total() == 31.2


def test_coupon(cart):
    assert cart.total("HALF") == 15.6
    assert cart.total("OTHER") == 31.2


def test_coupon_needs_minimum():
    small = Cart()
    small.add("pen", 19.99)
    assert small.total("HALF") == 23.99
    exact = Cart()
    exact.add("mug", 20)
    assert exact.total("HALF") == 12.0


def test_bad_lines():
    with pytest.raises(ValueError):
        Cart().add("x", -1)
    with pytest.raises(ValueError):
        Cart().add("x", 1, 0)
