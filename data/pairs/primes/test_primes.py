from primes import is_prime, primes_below


def test_small_numbers():
    assert [n for n in range(-2, 12) if is_prime(n)] == [2, 3, 5, 7, 11]


def test_squares_of_primes_are_composite():
    assert not is_prime(9)
    assert not is_prime(25)
    assert not is_prime(49)


def test_primes_below():
    assert primes_below(20) == [2, 3, 5, 7, 11, 13, 17, 19]
    assert primes_below(2) == []
