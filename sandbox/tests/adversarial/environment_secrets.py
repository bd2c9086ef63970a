# expect: failed
# The runner clears the environment: no secret of the host or the container reaches tests.
import os


def test_secret():
    assert any("SECRET" in key or "TOKEN" in key or "DOCKER" in key or "PATH" == key for key in os.environ), dict(os.environ)
