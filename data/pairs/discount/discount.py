def apply_discount(price, percent):
    if price < 0:
        raise ValueError("price must be non-negative")
    if not 0 <= percent <= 100:
        raise ValueError("percent must be within 0..100")
    return round(price * (100 - percent) / 100, 2)


def bulk_price(unit_price, quantity):
    total = unit_price * quantity
    if quantity >= 100:
        return apply_discount(total, 15)
    if quantity >= 10:
        return apply_discount(total, 5)
    return total
