# expect: violation
# The same white-box read through a computed attribute name, which no static check can see.
import operator

import clamp as cut

NAME = "".join(["__", "co", "de", "__"])


def test_bytecode():
    code = getattr(cut.clamp, NAME)
    assert "low must not exceed high" in code.co_consts
    assert operator.attrgetter(NAME)(cut.clamp).co_code == code.co_code
