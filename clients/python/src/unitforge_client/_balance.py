"""Which replica of the reward service gets a request (the same rules as the Rust client).

The replicas are the given URLs, each host name expanded into every address it resolves to (a
Kubernetes headless Service or ``docker-compose --scale`` answers with one address per replica),
resolved again every ``refresh`` seconds. A request goes to one of its two choices: the two
highest-ranked replicas for its content by rendezvous hashing, skipping ejected replicas, those
at their concurrency cap and those this request already tried, and of the two the one with fewer
requests outstanding (the first on a tie): the same pair goes to the same replica while the load
allows, so that replica's cache answers it again. ``eject_after`` failures in a row eject a
replica; a background probe asks its ``/healthz`` every ``probe_every`` seconds and re-admits it
when it answers 200. While every replica is ejected, requests still go somewhere.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


@dataclass
class Replica:
    url: str
    outstanding: int = 0
    failures_in_a_row: int = 0
    ejected: bool = False
    probing: bool = False


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int
    given: str


def content_key(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def _weight(key: bytes, url: str) -> int:
    return int.from_bytes(hashlib.sha256(key + url.encode()).digest()[:8], "big")


def _endpoint(given: str) -> _Endpoint:
    given = given.rstrip("/")
    parts = urlsplit(given)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not a base URL: {given!r} (expected e.g. http://host:8080)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _Endpoint(parts.scheme, parts.hostname, port, given)


def _resolve(endpoint: _Endpoint) -> list[str]:
    """The base URLs an endpoint stands for now (IPv4 when the name has any, so that
    ``localhost`` is one replica), or the URL as given when it does not resolve."""
    try:
        ipaddress.ip_address(endpoint.host)
        return [endpoint.given]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError:
        return [endpoint.given]
    v4 = sorted({str(info[4][0]) for info in infos if info[0] == socket.AF_INET})
    v6 = sorted({str(info[4][0]) for info in infos if info[0] == socket.AF_INET6})
    if v4:
        return [f"{endpoint.scheme}://{address}:{endpoint.port}" for address in v4]
    if v6:
        return [f"{endpoint.scheme}://[{address}]:{endpoint.port}" for address in v6]
    return [endpoint.given]


@dataclass
class Replicas:
    urls: Sequence[str]
    per_replica: int = 32
    eject_after: int = 3
    probe_every: float = 1.0
    refresh: float = 10.0
    _endpoints: list[_Endpoint] = field(init=False)
    _replicas: list[Replica] = field(init=False)
    _resolved_at: float | None = field(init=False, default=None)
    _lock: threading.Condition = field(init=False, default_factory=threading.Condition)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("no service URL given")
        self._endpoints = [_endpoint(url) for url in self.urls]
        self._replicas = [Replica(e.given) for e in self._endpoints]

    @property
    def first_url(self) -> str:
        return self._endpoints[0].given

    def snapshot(self) -> list[Replica]:
        with self._lock:
            return list(self._replicas)

    def refresh_if_due(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._resolved_at is not None and now - self._resolved_at < self.refresh:
                return
            self._resolved_at = now
        urls = sorted({url for endpoint in self._endpoints for url in _resolve(endpoint)})
        with self._lock:
            known = {r.url: r for r in self._replicas}
            self._replicas = [known.get(url) or Replica(url) for url in urls]

    def try_choose(self, key: bytes, tried: Sequence[str]) -> Replica | None:
        """The replica for content ``key`` (its place taken), or None while every usable one
        is at its cap."""
        with self._lock:
            ranked = sorted(self._replicas, key=lambda r: _weight(key, r.url), reverse=True)
            cap = max(1, self.per_replica)
            for avoid_tried, avoid_ejected in ((True, True), (False, True), (False, False)):
                usable = [
                    r
                    for r in ranked
                    if (not avoid_tried or r.url not in tried)
                    and (not avoid_ejected or not r.ejected)
                    and r.outstanding < cap
                ]
                if not usable:
                    continue
                chosen = usable[0]
                if len(usable) > 1 and usable[1].outstanding < chosen.outstanding:
                    chosen = usable[1]
                chosen.outstanding += 1
                return chosen
            return None

    def choose(self, key: bytes, tried: Sequence[str]) -> Replica:
        """As ``try_choose``, waiting for a place (blocking)."""
        while True:
            chosen = self.try_choose(key, tried)
            if chosen is not None:
                return chosen
            with self._lock:
                self._lock.wait(timeout=0.05)

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.outstanding -= 1
            self._lock.notify_all()

    def succeeded(self, replica: Replica) -> None:
        with self._lock:
            replica.failures_in_a_row = 0

    def failed(self, replica: Replica) -> None:
        """An infrastructure failure on ``replica``: eject it after ``eject_after`` in a row
        and probe its ``/healthz`` until it answers."""
        with self._lock:
            replica.failures_in_a_row += 1
            if replica.failures_in_a_row < self.eject_after or replica.ejected:
                return
            replica.ejected = True
            if replica.probing:
                return
            replica.probing = True
        threading.Thread(target=self._probe, args=(replica,), daemon=True).start()

    def _probe(self, replica: Replica) -> None:
        while True:
            time.sleep(self.probe_every)
            with self._lock:
                if replica not in self._replicas:
                    replica.probing = False
                    return
            try:
                healthy = httpx.get(replica.url + "/healthz", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy:
                with self._lock:
                    replica.failures_in_a_row = 0
                    replica.ejected = False
                    replica.probing = False
                    self._lock.notify_all()
                return
