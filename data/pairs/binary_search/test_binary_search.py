from binary_search import binary_search

ITEMS = [1, 3, 5, 7, 9, 11]


def test_finds_every_item():
    for index, item in enumerate(ITEMS):
        assert binary_search(ITEMS, item) == index


def test_missing_items():
    for missing in [0, 2, 8, 12]:
        assert binary_search(ITEMS, missing) == -1


def test_empty_and_single():
    assert binary_search([], 1) == -1
    assert binary_search([4], 4) == 0
