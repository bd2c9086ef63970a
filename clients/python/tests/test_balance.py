"""Spreading requests over replicas: rendezvous choices, the cap, retries elsewhere, ejection and
re-admission — the rules alone, then against a real service beside a dead address."""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import CLAMP, CLAMP_TESTS

from unitforge_client import AsyncClient, Client, Score
from unitforge_client._balance import Replicas, content_key

THREE = ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"]


def test_the_same_content_goes_to_the_same_replica_when_idle() -> None:
    replicas = Replicas(THREE)
    spread: Counter[str] = Counter()
    for i in range(300):
        key = content_key(f"pair {i}".encode())
        first = replicas.choose(key, [])
        replicas.release(first)
        again = replicas.choose(key, [])
        replicas.release(again)
        assert first.url == again.url
        spread[first.url] += 1
    assert len(spread) == 3 and min(spread.values()) > 60, spread


def test_under_load_the_second_choice_takes_over_and_ties_go_to_the_first() -> None:
    replicas = Replicas(THREE)
    key = content_key(b"one pair")
    first = replicas.choose(key, [])
    second = replicas.choose(key, [])
    assert second.url != first.url
    third = replicas.choose(key, [])
    assert third.url == first.url
    for held in (first, second, third):
        replicas.release(held)
    assert all(r.outstanding == 0 for r in replicas.snapshot())


def test_a_retry_goes_to_a_replica_not_tried_yet() -> None:
    replicas = Replicas(THREE)
    key = content_key(b"retry me")
    tried: list[str] = []
    for _ in range(3):
        chosen = replicas.choose(key, tried)
        replicas.release(chosen)
        tried.append(chosen.url)
    assert sorted(tried) == sorted(THREE)


def test_the_cap_holds_a_request_until_a_place_frees() -> None:
    replicas = Replicas(THREE[:1], per_replica=1)
    key = content_key(b"capped")
    held = replicas.choose(key, [])
    assert replicas.try_choose(key, []) is None
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(replicas.choose(key, []).url))
    waiter.start()
    time.sleep(0.1)
    assert not got
    replicas.release(held)
    waiter.join(timeout=5)
    assert got == [THREE[0]]


@pytest.fixture
def healthz_url() -> Iterator[str]:
    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_failures_in_a_row_eject_and_a_healthy_answer_readmits(healthz_url: str) -> None:
    replicas = Replicas([healthz_url, THREE[1]], eject_after=2, probe_every=0.05)
    target = next(r for r in replicas.snapshot() if r.url == healthz_url)
    replicas.failed(target)
    assert not target.ejected
    replicas.failed(target)
    assert target.ejected
    for i in range(20):
        chosen = replicas.choose(content_key(str(i).encode()), [])
        replicas.release(chosen)
        assert chosen.url != healthz_url
    deadline = time.monotonic() + 5
    while target.ejected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not target.ejected, "not re-admitted after /healthz answered"


def test_a_name_stands_for_its_addresses() -> None:
    replicas = Replicas(["http://localhost:9/"])
    replicas.refresh_if_due()
    assert [r.url for r in replicas.snapshot()] == ["http://127.0.0.1:9"]


def test_a_dead_replica_beside_a_live_one_loses_no_request(service_url: str, dead_url: str) -> None:
    suites = [CLAMP_TESTS] + [
        f"from clamp import clamp\n\ndef test_{i}():\n    assert clamp({i}, 0, 5) == {min(i, 5)}\n"
        for i in range(8)
    ]
    with Client([dead_url, service_url], retries=3, backoff=0.01) as client:
        scores = [client.score(CLAMP, suite, module="clamp") for suite in suites]
        assert all(isinstance(s, Score) and s.valid for s in scores)
        dead = next(r for r in client.replicas() if r["url"] == dead_url)
        assert dead["ejected"], client.replicas()


async def test_the_async_client_spreads_and_survives_the_same(
    service_url: str, dead_url: str
) -> None:
    async with AsyncClient([dead_url, service_url], retries=3, backoff=0.01) as client:
        scores = [await client.score(CLAMP, CLAMP_TESTS, module="clamp") for _ in range(4)]
        assert all(s.valid for s in scores)
