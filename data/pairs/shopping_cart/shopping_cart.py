class Cart:
    TAX_RATE = 0.2

    def __init__(self):
        self.lines = []

    def add(self, name, price, quantity=1):
        if price < 0 or quantity < 1:
            raise ValueError("bad line")
        self.lines.append((name, price, quantity))

    def subtotal(self):
        return sum(price * quantity for _, price, quantity in self.lines)

    def total(self, coupon=None):
        amount = self.subtotal()
        if coupon == "HALF" and amount >= 20:
            amount = amount / 2
        return round(amount * (1 + self.TAX_RATE), 2)
