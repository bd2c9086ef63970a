"""Clients of the unitforge reward service: ``Client`` (blocking) and ``AsyncClient``.

Both take one URL or several, and spread requests over the service's replicas (``_balance``:
each host name resolved to every replica, the two rendezvous choices for the pair's content, the
less loaded of them, a cap per replica, failing replicas ejected until ``/healthz`` answers).
Both retry what is worth retrying — connection errors, timeouts, 429 (after its ``Retry-After``),
502/503/504 — on a *different* replica, with exponential backoff and jitter, within an overall
``deadline``; they never retry input errors (400, 413, 422). An infrastructure failure is raised
as ``InfrastructureError``, never turned into a score. ``score_batch`` uses the streamed
``/v1/score/batch`` endpoint and returns one result per pair, in order: a ``Score``, or the
``UnitforgeError`` that pair got.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from ._balance import Replica, Replicas, content_key
from .types import InfrastructureError, InputError, Score, UnitforgeError

Pair = Mapping[str, Any] | Sequence[str]
Result = Score | UnitforgeError

_RETRYABLE_STATUS = {429, 502, 503, 504}


def _request_body(
    code: str, tests: str, module: str, config: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "tests": tests, "module": module}
    if config is not None:
        body["config"] = dict(config)
    return body


def _pair_body(pair: Pair, config: Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(pair, Mapping):
        return _request_body(
            str(pair["code"]), str(pair["tests"]), str(pair.get("module", "solution")), config
        )
    code, tests = pair[0], pair[1]
    module = pair[2] if len(pair) > 2 else "solution"
    return _request_body(code, tests, module, config)


def _error(status: int, body: Any) -> UnitforgeError:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    kind = str(error.get("kind", "infra"))
    message = str(error.get("message", f"HTTP {status}"))
    if kind in ("input", "limit") or status in (400, 413, 415, 422):
        return InputError(status, kind, message)
    return InfrastructureError(f"HTTP {status} ({kind}): {message}")


def _retry_after(response: httpx.Response, backoff: float) -> float:
    try:
        return max(float(response.headers.get("retry-after", "")), backoff)
    except ValueError:
        return backoff


class _Retry:
    """A retryable answer: wait this long, and why; ``unhealthy``: counts towards ejecting the
    replica (a 429 is load, not ill health)."""

    def __init__(self, wait: float, why: str, unhealthy: bool = True) -> None:
        self.wait = wait
        self.why = why
        self.unhealthy = unhealthy


URLs = str | Sequence[str]


class _Settings:
    def __init__(
        self,
        urls: URLs,
        timeout: float,
        retries: int,
        backoff: float,
        deadline: float,
        per_replica: int,
    ) -> None:
        self.replicas = Replicas([urls] if isinstance(urls, str) else list(urls), per_replica)
        self.url = self.replicas.first_url
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.deadline = deadline

    def wait(self, attempt: int, at_least: float = 0.0) -> float:
        base = max(self.backoff * (2**attempt), at_least)
        return float(min(base, 30.0) * (0.5 + random.random()))

    def judge(self, response: httpx.Response, attempt: int) -> Any:
        """The JSON of a 200; a `_Retry` for what is worth retrying; raises for the rest."""
        if response.status_code == 200:
            return response.json()
        if response.status_code not in _RETRYABLE_STATUS:
            raise _error(response.status_code, _json(response))
        wait = self.wait(attempt, _retry_after(response, self.backoff))
        return _Retry(wait, f"HTTP {response.status_code}", response.status_code != 429)

    def attempt_failed(self, replica: Replica, answer: _Retry) -> None:
        if answer.unhealthy:
            self.replicas.failed(replica)


_JSON = {"content-type": "application/json"}


class Client:
    """A blocking client. ``url``: the service's base URL, e.g. ``http://127.0.0.1:8080``, or
    several (a host name stands for every address it resolves to)."""

    def __init__(
        self,
        url: URLs,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.2,
        deadline: float = 900.0,
        per_replica: int = 32,
    ) -> None:
        self._settings = _Settings(url, timeout, retries, backoff, deadline, per_replica)
        self._http = httpx.Client(timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        settings = self._settings
        data = json.dumps(body).encode()
        key = content_key(data)
        deadline = time.monotonic() + settings.deadline
        tried: list[str] = []
        last = ""
        for attempt in range(settings.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                last = f"the deadline of {settings.deadline} s passed; {last}"
                break
            settings.replicas.refresh_if_due()
            replica = settings.replicas.choose(key, tried)
            tried.append(replica.url)
            wait = settings.wait(attempt)
            try:
                response = self._http.post(
                    replica.url + path,
                    content=data,
                    headers=_JSON,
                    timeout=min(settings.timeout, left),
                )
                answer = settings.judge(response, attempt)
            except httpx.HTTPError as err:
                settings.replicas.failed(replica)
                last = f"{replica.url}: {type(err).__name__}: {err}"
            except UnitforgeError:
                settings.replicas.succeeded(replica)
                raise
            else:
                if not isinstance(answer, _Retry):
                    settings.replicas.succeeded(replica)
                    return answer
                settings.attempt_failed(replica, answer)
                wait, last = answer.wait, f"{replica.url}: {answer.why}"
            finally:
                settings.replicas.release(replica)
            if attempt < settings.retries:
                time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
        raise InfrastructureError(f"{path}: no answer after {len(tried)} attempts ({last})")

    def score(
        self,
        code: str,
        tests: str,
        config: Mapping[str, Any] | None = None,
        module: str = "solution",
    ) -> Score:
        """Score ``tests`` against ``code`` (a module importable as ``module``)."""
        return Score.from_response(
            self._post("/v1/score", _request_body(code, tests, module, config))
        )

    def score_batch(
        self, pairs: Iterable[Pair], config: Mapping[str, Any] | None = None
    ) -> list[Result]:
        """Score many pairs (dicts with ``code``, ``tests``, optional ``module``, or tuples) in
        one streamed request; results in input order."""
        items = [_pair_body(pair, config) for pair in pairs]
        settings = self._settings
        data = json.dumps({"items": items}).encode()
        key = content_key(data)
        tried: list[str] = []
        for attempt in range(settings.retries + 1):
            settings.replicas.refresh_if_due()
            replica = settings.replicas.choose(key, tried)
            tried.append(replica.url)
            try:
                with self._http.stream(
                    "POST", replica.url + "/v1/score/batch", content=data, headers=_JSON
                ) as response:
                    if response.status_code == 200:
                        results = _batch_results(len(items), response.iter_lines())
                        settings.replicas.succeeded(replica)
                        return results
                    response.read()
                    if response.status_code not in _RETRYABLE_STATUS:
                        settings.replicas.succeeded(replica)
                        raise _error(response.status_code, _json(response))
                    if response.status_code != 429:
                        settings.replicas.failed(replica)
            except httpx.HTTPError:
                settings.replicas.failed(replica)
            finally:
                settings.replicas.release(replica)
            if attempt < settings.retries:
                time.sleep(settings.wait(attempt))
        raise InfrastructureError("/v1/score/batch: no answer after every attempt")

    def health(self) -> dict[str, Any]:
        response = self._http.get(self._settings.url + "/healthz")
        result: dict[str, Any] = response.json()
        return result

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas as this client sees them: URL, requests outstanding, ejected."""
        return [
            {"url": r.url, "outstanding": r.outstanding, "ejected": r.ejected}
            for r in self._settings.replicas.snapshot()
        ]


class AsyncClient:
    """An asyncio client; ``max_in_flight`` caps the requests in flight at once, ``per_replica``
    those to one replica."""

    def __init__(
        self,
        url: URLs,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_in_flight: int = 64,
        deadline: float = 900.0,
        per_replica: int = 32,
    ) -> None:
        self._settings = _Settings(url, timeout, retries, backoff, deadline, per_replica)
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=max_in_flight)
        )
        self._permits = asyncio.Semaphore(max_in_flight)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _choose(self, key: bytes, tried: list[str]) -> Replica:
        while True:
            chosen = self._settings.replicas.try_choose(key, tried)
            if chosen is not None:
                return chosen
            await asyncio.sleep(0.05)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        settings = self._settings
        data = json.dumps(body).encode()
        key = content_key(data)
        deadline = time.monotonic() + settings.deadline
        tried: list[str] = []
        last = ""
        async with self._permits:
            for attempt in range(settings.retries + 1):
                left = deadline - time.monotonic()
                if left <= 0:
                    last = f"the deadline of {settings.deadline} s passed; {last}"
                    break
                await asyncio.to_thread(settings.replicas.refresh_if_due)
                replica = await self._choose(key, tried)
                tried.append(replica.url)
                wait = settings.wait(attempt)
                try:
                    response = await self._http.post(
                        replica.url + path,
                        content=data,
                        headers=_JSON,
                        timeout=min(settings.timeout, left),
                    )
                    answer = settings.judge(response, attempt)
                except httpx.HTTPError as err:
                    settings.replicas.failed(replica)
                    last = f"{replica.url}: {type(err).__name__}: {err}"
                except UnitforgeError:
                    settings.replicas.succeeded(replica)
                    raise
                else:
                    if not isinstance(answer, _Retry):
                        settings.replicas.succeeded(replica)
                        return answer
                    settings.attempt_failed(replica, answer)
                    wait, last = answer.wait, f"{replica.url}: {answer.why}"
                finally:
                    settings.replicas.release(replica)
                if attempt < settings.retries:
                    await asyncio.sleep(max(0.0, min(wait, deadline - time.monotonic())))
        raise InfrastructureError(f"{path}: no answer after {len(tried)} attempts ({last})")

    async def score(
        self,
        code: str,
        tests: str,
        config: Mapping[str, Any] | None = None,
        module: str = "solution",
    ) -> Score:
        body = _request_body(code, tests, module, config)
        return Score.from_response(await self._post("/v1/score", body))

    async def score_batch(
        self, pairs: Iterable[Pair], config: Mapping[str, Any] | None = None
    ) -> list[Result]:
        """Score many pairs concurrently (one request each, ``max_in_flight`` at a time);
        results in input order, a failure in its pair's place."""

        async def one(pair: Pair) -> Result:
            body = _pair_body(pair, config)
            try:
                return Score.from_response(await self._post("/v1/score", body))
            except UnitforgeError as err:
                return err

        return list(await asyncio.gather(*(one(pair) for pair in pairs)))

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas as this client sees them: URL, requests outstanding, ejected."""
        return [
            {"url": r.url, "outstanding": r.outstanding, "ejected": r.ejected}
            for r in self._settings.replicas.snapshot()
        ]


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, ValueError):
        return None


def _batch_results(count: int, lines: Iterable[str]) -> list[Result]:
    results: list[Result | None] = [None] * count
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        index = int(item["index"])
        if item.get("response") is not None:
            results[index] = Score.from_response(item["response"])
        else:
            error = item.get("error") or {}
            kind = str(error.get("kind", "infra"))
            message = str(error.get("message", ""))
            results[index] = (
                InputError(422, kind, message)
                if kind in ("input", "limit")
                else InfrastructureError(f"{kind}: {message}")
            )
    return [
        result if result is not None else InfrastructureError("no result in the batch stream")
        for result in results
    ]
