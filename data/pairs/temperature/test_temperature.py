import pytest
from temperature import celsius_to_fahrenheit, fahrenheit_to_celsius


def test_known_points():
    assert celsius_to_fahrenheit(0) == 32
    assert celsius_to_fahrenheit(100) == 212
    assert fahrenheit_to_celsius(212) == 100
    assert celsius_to_fahrenheit(-40) == -40


def test_round_trip():
    assert fahrenheit_to_celsius(celsius_to_fahrenheit(36.6)) == pytest.approx(36.6)


def test_absolute_zero():
    assert celsius_to_fahrenheit(-273.15) == pytest.approx(-459.67)
    with pytest.raises(ValueError):
        celsius_to_fahrenheit(-274)
    with pytest.raises(ValueError):
        fahrenheit_to_celsius(-460)
