import pytest
from grades import average, letter_grade


@pytest.mark.parametrize("score, grade", [(100, "A"), (90, "A"), (89, "B"), (80, "B"), (79, "C"), (70, "C"), (69, "D"), (60, "D"), (59, "F"), (0, "F")])
def test_letter_grades(score, grade):
    assert letter_grade(score) == grade


@pytest.mark.parametrize("score", [-1, 101])
def test_invalid(score):
    with pytest.raises(ValueError):
        letter_grade(score)


def test_average():
    assert average([80, 90, 100]) == 90
    assert average([]) == 0.0
