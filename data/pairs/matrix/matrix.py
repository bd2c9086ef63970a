def transpose(matrix):
    if not matrix:
        return []
    return [list(row) for row in zip(*matrix)]


def multiply(a, b):
    if not a or len(a[0]) != len(b):
        raise ValueError("incompatible shapes")
    columns = transpose(b)
    return [[sum(x * y for x, y in zip(row, col)) for col in columns] for row in a]


def identity(n):
    return [[1 if i == j else 0 for j in range(n)] for i in range(n)]
