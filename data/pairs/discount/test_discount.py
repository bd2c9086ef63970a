import pytest
from discount import apply_discount, bulk_price


def test_apply_discount():
    assert apply_discount(100, 20) == 80
    assert apply_discount(19.99, 0) == 19.99
    assert apply_discount(50, 100) == 0


@pytest.mark.parametrize("price, percent", [(-1, 10), (10, -1), (10, 101)])
def test_invalid(price, percent):
    with pytest.raises(ValueError):
        apply_discount(price, percent)


def test_bulk_tiers():
    assert bulk_price(2, 9) == 18
    assert bulk_price(2, 10) == 19
    assert bulk_price(1, 99) == 94.05
    assert bulk_price(1, 100) == 85
