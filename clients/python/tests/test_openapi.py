"""The OpenAPI file tells the truth about the service: schemathesis, every check, against a real
service (the schema-valid requests the service refuses on purpose are listed in
docs/schemathesis.toml, with why)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def test_schemathesis_finds_nothing(service_url: str) -> None:
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(st).exists():
        pytest.fail("schemathesis is missing from the test environment (make test installs it)")
    run = subprocess.run(
        [
            st,
            "--config-file",
            str(REPO / "docs/schemathesis.toml"),
            "run",
            str(REPO / "docs/openapi.json"),
            "--url",
            service_url,
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
