"""What the trainers hand a reward function, reduced to (code under test, module, test file)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .extract import extract_tests


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or a conversation (the assistant messages' content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        parts = [
            str(message.get("content", ""))
            for message in completion
            if isinstance(message, Mapping) and message.get("role", "assistant") == "assistant"
        ]
        return "".join(parts)
    return str(completion)


def code_and_module(value: Any, module: Any = None) -> tuple[str, str]:
    """The code under test and its module name from a dataset value: the code itself, a mapping
    with ``code`` (and ``module``), or such a mapping as JSON."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, Mapping) and "code" in parsed:
            value = parsed
    if isinstance(value, Mapping):
        return str(value["code"]), str(value.get("module") or module or "solution")
    return str(value), str(module or "solution")


def pairs(
    completions: Sequence[Any], codes: Sequence[Any], modules: Sequence[Any] | None
) -> list[dict[str, str]]:
    """One score request per completion."""
    result = []
    for index, completion in enumerate(completions):
        module = modules[index] if modules is not None else None
        code, module_name = code_and_module(codes[index], module)
        result.append(
            {
                "code": code,
                "module": module_name,
                "tests": extract_tests(completion_text(completion)),
            }
        )
    return result
