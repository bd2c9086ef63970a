# expect: violation
# A function's default values, read through object.__getattribute__ with a computed name.
import clamp as cut


def test_defaults():
    assert object.__getattribute__(cut.clamp, "__def" + "aults__") is None
