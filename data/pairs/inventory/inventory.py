class Inventory:
    def __init__(self):
        self.stock = {}

    def add(self, item, quantity=1):
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.stock[item] = self.stock.get(item, 0) + quantity

    def remove(self, item, quantity=1):
        have = self.stock.get(item, 0)
        if quantity > have:
            raise KeyError(item)
        if quantity == have:
            del self.stock[item]
        else:
            self.stock[item] = have - quantity

    def total(self):
        return sum(self.stock.values())

    def low_stock(self, threshold=2):
        return sorted(item for item, qty in self.stock.items() if qty <= threshold)
