"""A real reward service for the tests: `unitforge serve` on a loopback port, the local executor
(the `.venv` pytest that `make test` sets up), no cache (each test scores afresh)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("UNITFORGE_BIN", REPO / "target" / "release" / "unitforge"))


def _start(*extra: str) -> tuple[subprocess.Popen[str], str]:
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} is missing: `cargo build --release` first (make test does)")
    process = subprocess.Popen(
        [
            str(BINARY),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--executor",
            "local",
            "--workers",
            "2",
            *extra,
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    for line in process.stderr:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            return process, found.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    pytest.fail("the service did not start")


@pytest.fixture(scope="session")
def service_url() -> Iterator[str]:
    process, url = _start("--no-cache")
    try:
        httpx.get(url + "/healthz", timeout=10).raise_for_status()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def dead_url() -> str:
    """A loopback URL where nothing listens (port 9, discard)."""
    return "http://127.0.0.1:9"


CLAMP = (REPO / "data/pairs/clamp/clamp.py").read_text()
CLAMP_TESTS = (REPO / "data/pairs/clamp/test_clamp.py").read_text()
HOSTILE = (REPO / "sandbox/tests/adversarial/read_cut_source.py").read_text()
