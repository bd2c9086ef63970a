"""Reward functions for TRL's ``GRPOTrainer(reward_funcs=[...])``.

TRL calls a reward function with ``prompts``, ``completions`` (strings, or conversations),
``completion_ids``, every dataset column as a per-sample list, and in newer versions
``trainer_state``, ``log_metric`` and ``log_extra``. These functions take the code under test from
a dataset column (``code`` by default; a ``module`` column, if present, names its module), extract
the test file from each completion as the Rust trainer does, score them all concurrently through
the reward service, and return one float per sample — or ``None`` for a sample the service could
not score (an infrastructure failure, an unusable code under test), which TRL leaves out of its
group. Never 0 for a failure: 0 is what an invalid or useless suite earns.

    from unitforge_client.trl import composite_reward, component_rewards
    trainer = GRPOTrainer(model=..., reward_funcs=[composite_reward("http://127.0.0.1:8080")], ...)
    # or each component, weighted:
    GRPOTrainer(..., reward_funcs=component_rewards(URL), args=GRPOConfig(reward_weights=[...]))

Since TRL 0.27 an ``async def`` reward function runs concurrently with the others; the default
functions are async. ``asynchronous=False`` gives a plain function for older versions (it still
scores a batch concurrently, on its own event loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._samples import pairs
from .client import AsyncClient, URLs
from .types import COMPONENTS, Score, UnitforgeError

# What TRL passes beside the dataset's columns.
_TRL_ARGUMENTS = ("trainer_state", "log_metric", "log_extra", "completion_ids")

RewardList = list[float | None]
RewardFunc = Callable[..., RewardList | Awaitable[RewardList]]


class _Scorer:
    """Scores a batch through an ``AsyncClient`` per event loop (a client is bound to its loop)."""

    def __init__(self, url: URLs, config: Mapping[str, Any] | None, **client: Any) -> None:
        self.url = url
        self.config = config
        self.client = client
        self._clients: dict[int, AsyncClient] = {}
        self._lock = threading.Lock()

    def _client(self) -> AsyncClient:
        loop = id(asyncio.get_running_loop())
        with self._lock:
            if loop not in self._clients:
                self._clients[loop] = AsyncClient(self.url, **self.client)
            return self._clients[loop]

    async def score(self, requests: list[dict[str, str]]) -> list[Score | UnitforgeError]:
        return await self._client().score_batch(requests, self.config)


def _make(
    name: str,
    component: str,
    url: URLs,
    code_column: str,
    module_column: str,
    config: Mapping[str, Any] | None,
    asynchronous: bool,
    log_components: bool,
    client: Mapping[str, Any],
) -> RewardFunc:
    scorer = _Scorer(url, config, **dict(client))

    async def reward(
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> RewardList:
        if completions is None:
            raise TypeError("a TRL reward function needs `completions`")
        if code_column not in kwargs:
            columns = sorted(k for k in kwargs if k not in _TRL_ARGUMENTS)
            raise KeyError(
                f"the dataset has no {code_column!r} column with the code under test "
                f"(columns: {columns})"
            )
        requests = pairs(completions, kwargs[code_column], kwargs.get(module_column))
        results = await scorer.score(requests)
        values: RewardList = [
            result.component(component) if isinstance(result, Score) else None for result in results
        ]
        log_metric = kwargs.get("log_metric")
        if log_components and callable(log_metric):
            scored = [r for r in results if isinstance(r, Score)]
            for part in ("composite", *COMPONENTS):
                if scored:
                    log_metric(
                        f"unitforge/{part}", sum(s.component(part) for s in scored) / len(scored)
                    )
            log_metric("unitforge/excluded", float(len(results) - len(scored)))
        return values

    reward.__name__ = name
    reward.__qualname__ = name
    if asynchronous:
        return reward

    def blocking(*args: Any, **kwargs: Any) -> RewardList:
        return asyncio.run(reward(*args, **kwargs))

    blocking.__name__ = name
    blocking.__qualname__ = name
    return blocking


def composite_reward(
    url: URLs,
    *,
    code_column: str = "code",
    module_column: str = "module",
    config: Mapping[str, Any] | None = None,
    asynchronous: bool = True,
    **client: Any,
) -> RewardFunc:
    """The composite reward; logs every component through ``log_metric`` when TRL passes it.
    ``config`` is a reward config (configs/rewards.yaml as a dict); ``client`` goes to
    ``AsyncClient`` (``timeout``, ``retries``, ``max_in_flight``)."""
    return _make(
        "unitforge_composite",
        "composite",
        url,
        code_column,
        module_column,
        config,
        asynchronous,
        True,
        client,
    )


def component_reward(
    component: str,
    url: URLs,
    *,
    code_column: str = "code",
    module_column: str = "module",
    config: Mapping[str, Any] | None = None,
    asynchronous: bool = True,
    **client: Any,
) -> RewardFunc:
    """One component (``validity``, ``mutant_kill``, ``speed``, ``stability``, ``robustness``)."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    return _make(
        f"unitforge_{component}",
        component,
        url,
        code_column,
        module_column,
        config,
        asynchronous,
        False,
        client,
    )


def component_rewards(url: URLs, **options: Any) -> list[RewardFunc]:
    """One function per component, to weight with ``GRPOConfig(reward_weights=[...])``. The
    service's cache scores each completion once, whatever the number of functions."""
    return [component_reward(component, url, **options) for component in COMPONENTS]
