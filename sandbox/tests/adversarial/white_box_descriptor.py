# expect: violation
# The code object through the function type's descriptor, found with vars() and a computed key.
import clamp as cut

KEY = "_".join(["", "", "code", "", ""])


def test_descriptor():
    descriptor = vars(type(cut.clamp))[KEY]
    assert descriptor.__get__(cut.clamp).co_consts
