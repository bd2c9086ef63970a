import pytest
from parse_duration import parse_duration


@pytest.mark.parametrize("text, seconds", [("1h", 3600), ("2m", 120), ("45s", 45), ("1h30m15s", 5415), ("90m", 5400)])
def test_valid(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10", "5x", "1h2"])
def test_invalid(text):
    with pytest.raises(ValueError):
        parse_duration(text)
