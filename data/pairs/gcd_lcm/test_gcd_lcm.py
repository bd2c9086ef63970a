from gcd_lcm import gcd, lcm


def test_gcd():
    assert gcd(12, 18) == 6
    assert gcd(17, 5) == 1
    assert gcd(0, 9) == 9
    assert gcd(-8, 12) == 4


def test_lcm():
    assert lcm(4, 6) == 12
    assert lcm(0, 5) == 0
    assert lcm(7, 3) == 21
    assert lcm(-4, 6) == 12
