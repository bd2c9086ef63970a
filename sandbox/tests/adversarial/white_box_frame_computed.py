# expect: violation
# The same walk with computed names, laundered through pytest's own ExceptionInfo.
import pytest

from clamp import clamp


def test_frame():
    with pytest.raises(ValueError) as info:
        clamp(1, 5, 0)
    entry = info.traceback[-1]
    frame = getattr(entry, "fr" + "ame")
    assert getattr(frame, "co" + "de").raw.co_consts
