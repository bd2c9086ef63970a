import pytest
from fizzbuzz import fizzbuzz, fizzbuzz_upto


@pytest.mark.parametrize("n, expected", [(1, "1"), (3, "Fizz"), (5, "Buzz"), (15, "FizzBuzz"), (9, "Fizz"), (10, "Buzz"), (30, "FizzBuzz")])
def test_single(n, expected):
    assert fizzbuzz(n) == expected


def test_sequence():
    assert fizzbuzz_upto(5) == ["1", "2", "Fizz", "4", "Buzz"]
    assert len(fizzbuzz_upto(15)) == 15
