# expect: violation
# Walks the traceback of an exception the CUT raised into the CUT's own frame and reads its code.
from clamp import clamp


def test_frame():
    try:
        clamp(1, 5, 0)
    except ValueError as error:
        tb = error.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        assert "low must not exceed high" in tb.tb_frame.f_code.co_consts
