"""A reward function for verl: ``reward.custom_reward_function.path`` = this file,
``.name`` = ``compute_score``.

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)`` per
sample; here ``ground_truth`` is the code under test (its text, or a mapping / JSON object with
``code`` and ``module``), ``solution_str`` the model's completion. The answer is a dict with
``score`` (the composite) and the same extra keys for every sample: the five components and
``valid``. The service's URL comes from the environment variable ``UNITFORGE_URL`` (default
``http://127.0.0.1:8080``; several, separated by commas, are balanced over). A sample the service cannot score raises ``UnitforgeError`` after
the client's retries: verl has no way to leave a sample out, and a failure is never a 0.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from typing import Any

from ._samples import code_and_module
from .client import AsyncClient
from .extract import extract_tests
from .types import COMPONENTS

_clients: dict[int, AsyncClient] = {}
_lock = threading.Lock()


def _client() -> AsyncClient:
    loop = id(asyncio.get_running_loop())
    with _lock:
        if loop not in _clients:
            # One URL, or several separated by commas (the client spreads over them).
            urls = os.environ.get("UNITFORGE_URL", "http://127.0.0.1:8080").split(",")
            _clients[loop] = AsyncClient([u.strip() for u in urls if u.strip()])
        return _clients[loop]


async def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The composite reward of ``solution_str``'s tests against ``ground_truth``'s code."""
    module = (extra_info or {}).get("module")
    code, module_name = code_and_module(ground_truth, module)
    score = await _client().score(code, extract_tests(solution_str), module=module_name)
    result = {"score": score.composite, "valid": float(score.valid)}
    for component in COMPONENTS:
        result[component] = score.component(component)
    return result
