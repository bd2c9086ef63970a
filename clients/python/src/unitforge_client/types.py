"""Typed results of the reward service (`/v1/score`): the six rewards and the full report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPONENTS = ("validity", "mutant_kill", "speed", "stability", "robustness")


@dataclass(frozen=True)
class Score:
    """One scored pair: the six rewards in [0, 1], and the whole report as the service sent it."""

    validity: float
    mutant_kill: float
    speed: float
    stability: float
    robustness: float
    composite: float
    valid: bool
    invalid_reason: str | None
    cache: str
    report: dict[str, Any] = field(repr=False)

    @classmethod
    def from_response(cls, response: dict[str, Any]) -> Score:
        report = response["report"]
        return cls(
            validity=float(report["validity"]),
            mutant_kill=float(report["mutant_kill"]),
            speed=float(report["speed"]),
            stability=float(report["stability"]),
            robustness=float(report["robustness"]),
            composite=float(report["composite"]),
            valid=bool(report["valid"]),
            invalid_reason=report.get("invalid_reason"),
            cache=str(response.get("cache", "")),
            report=report,
        )

    def component(self, name: str) -> float:
        """One of ``composite`` and the five components by name."""
        if name != "composite" and name not in COMPONENTS:
            raise ValueError(f"unknown reward component {name!r}")
        return float(getattr(self, name))


class UnitforgeError(Exception):
    """The service could not score a pair."""


class InputError(UnitforgeError):
    """The pair cannot be scored as given (HTTP 400, 413 or 422): retrying will not help."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"HTTP {status} ({kind}): {message}")
        self.status = status
        self.kind = kind


class InfrastructureError(UnitforgeError):
    """The service or its sandbox failed, after every retry. Never a reward of 0."""
