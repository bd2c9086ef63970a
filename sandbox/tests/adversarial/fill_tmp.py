# expect: failed
# Fills the temporary directory until the file-size limit or the tmpfs size stops it.
import os
import tempfile


def test_fill():
    directory = tempfile.gettempdir()
    for index in range(10**6):
        with open(os.path.join(directory, f"f{index}"), "wb") as handle:
            handle.write(b"z" * (8 << 20))
