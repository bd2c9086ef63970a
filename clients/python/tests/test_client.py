"""The clients against a real service: typed scores, input errors apart from infrastructure
errors, the streamed batch, and 64 requests in flight giving what serial calls give."""

from __future__ import annotations

import asyncio

import pytest
from conftest import CLAMP, CLAMP_TESTS

from unitforge_client import AsyncClient, Client, InfrastructureError, InputError, Score

# No speed term, so the composite does not depend on the clock and can be compared exactly.
TIMELESS = {"weights": {"mutant_kill": 0.6, "speed": 0.0, "stability": 0.2, "robustness": 0.2}}


def test_a_good_suite_and_a_bad_one(service_url: str) -> None:
    with Client(service_url) as client:
        good = client.score(CLAMP, CLAMP_TESTS, module="clamp")
        assert isinstance(good, Score) and good.valid
        assert good.validity == 1.0 and good.mutant_kill > 0.5 and 0 < good.composite <= 1
        bad = client.score(CLAMP, "def test_x(:\n", module="clamp")
        assert not bad.valid and bad.composite == 0.0 and "line 1" in (bad.invalid_reason or "")
        with pytest.raises(InputError) as unusable:
            client.score("def clamp(:\n", CLAMP_TESTS, module="clamp")
        assert unusable.value.status == 422


def test_an_unreachable_service_is_an_infrastructure_error(dead_url: str) -> None:
    with Client(dead_url, retries=1, backoff=0.01) as client:
        with pytest.raises(InfrastructureError):
            client.score(CLAMP, CLAMP_TESTS, module="clamp")


def test_the_streamed_batch_keeps_order_and_reports_failures_in_place(service_url: str) -> None:
    pairs = [
        {"code": CLAMP, "tests": CLAMP_TESTS, "module": "clamp"},
        ("def clamp(:\n", CLAMP_TESTS, "clamp"),
        (CLAMP, "def test_nothing():\n    assert True\n", "clamp"),
    ]
    with Client(service_url) as client:
        results = client.score_batch(pairs)
    assert isinstance(results[0], Score) and results[0].valid
    assert isinstance(results[1], InputError)
    assert isinstance(results[2], Score) and results[2].composite == 0.0


async def test_64_requests_in_flight_give_what_serial_calls_give(service_url: str) -> None:
    suites = [
        CLAMP_TESTS,
        "from clamp import clamp\n\ndef test_low():\n    assert clamp(-1, 0, 5) == 0\n",
        "from clamp import clamp\n\ndef test_mid():\n    assert clamp(3, 0, 5) == 3\n",
        "def test_nothing():\n    assert True\n",
    ]
    with Client(service_url) as client:
        serial = [client.score(CLAMP, s, TIMELESS, module="clamp") for s in suites]
    async with AsyncClient(service_url, max_in_flight=64) as client:
        many = await asyncio.gather(
            *(client.score(CLAMP, suites[i % 4], TIMELESS, module="clamp") for i in range(64))
        )
    for index, score in enumerate(many):
        expected = serial[index % 4]
        assert (score.validity, score.mutant_kill, score.stability, score.robustness) == (
            expected.validity,
            expected.mutant_kill,
            expected.stability,
            expected.robustness,
        )
        assert score.composite == pytest.approx(expected.composite, abs=1e-12)
