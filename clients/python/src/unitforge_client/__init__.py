"""Client of the unitforge reward service, and reward functions for TRL (``unitforge_client.trl``),
verl (``unitforge_client.verl``) and OpenRLHF (the service's ``/get_reward``)."""

from .client import AsyncClient, Client
from .extract import extract_tests
from .types import COMPONENTS, InfrastructureError, InputError, Score, UnitforgeError

__all__ = [
    "COMPONENTS",
    "AsyncClient",
    "Client",
    "InfrastructureError",
    "InputError",
    "Score",
    "UnitforgeError",
    "extract_tests",
]
__version__ = "0.1.0"
