"""The TRL and verl adapters and OpenRLHF's endpoint on valid, invalid, hostile and unparseable
completions, the way each trainer calls them; infrastructure errors are never a 0."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import CLAMP, CLAMP_TESTS, HOSTILE

from unitforge_client import extract_tests
from unitforge_client.trl import component_rewards, composite_reward
from unitforge_client.verl import compute_score

VALID = f"Here are the tests:\n```python\n{CLAMP_TESTS}```\nThey cover the bounds."
INVALID = "from clamp import clamp\n\ndef test_wrong():\n    assert clamp(5, 0, 1) == 5\n"
UNPARSEABLE = "I think the function clamps values. def test(:"
COMPLETIONS = [VALID, INVALID, f"```python\n{HOSTILE}```", UNPARSEABLE]
CODE = {"code": CLAMP, "module": "clamp"}


def test_extraction_matches_the_rust_trainer() -> None:
    cases = json.loads((Path(__file__).parent / "extract_cases.json").read_text())["cases"]
    assert len(cases) >= 10
    for case in cases:
        assert extract_tests(case["completion"]) == case["tests"], case["completion"]


async def test_trl_composite_and_components(service_url: str) -> None:
    logged: dict[str, float] = {}
    reward = composite_reward(service_url)
    assert reward.__name__ == "unitforge_composite"
    values = await reward(
        prompts=["p"] * 4,
        completions=COMPLETIONS,
        completion_ids=[[1]] * 4,
        code=[CLAMP] * 4,
        module=["clamp"] * 4,
        trainer_state=None,
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert values[0] is not None and values[0] > 0.5
    assert values[1:] == [0.0, 0.0, 0.0], "invalid, hostile and unparseable suites earn 0"
    assert logged["unitforge/validity"] == 0.25 and logged["unitforge/excluded"] == 0.0
    # Conversations, and the code under test as JSON with its module.
    chat = [[{"role": "assistant", "content": VALID}]]
    validity = component_rewards(service_url)[0]
    assert validity.__name__ == "unitforge_validity"
    assert await validity(prompts=["p"], completions=chat, code=[json.dumps(CODE)]) == [1.0]


def test_trl_blocking_variant_and_infrastructure_errors(service_url: str, dead_url: str) -> None:
    reward = composite_reward(service_url, asynchronous=False)
    assert reward(completions=[VALID], code=[CLAMP], module=["clamp"])[0] > 0.5
    down = composite_reward(dead_url, asynchronous=False, retries=1, backoff=0.01)
    assert down(completions=[VALID, INVALID], code=[CLAMP] * 2, module=["clamp"] * 2) == [
        None,
        None,
    ]
    with pytest.raises(KeyError, match="code"):
        reward(completions=[VALID], source=[CLAMP])


async def test_verl_compute_score(service_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNITFORGE_URL", service_url)
    results = [
        await compute_score("unitforge", completion, json.dumps(CODE), {"index": i})
        for i, completion in enumerate(COMPLETIONS)
    ]
    keys = {"score", "valid", "validity", "mutant_kill", "speed", "stability", "robustness"}
    assert all(set(r) == keys for r in results), "every sample has the same keys"
    assert results[0]["score"] > 0.5 and results[0]["valid"] == 1.0
    assert [r["score"] for r in results[1:]] == [0.0, 0.0, 0.0]


def test_openrlhf_get_reward(service_url: str) -> None:
    prompt = "<|im_start|>user\nWrite tests for clamp.<|im_end|>\n<|im_start|>assistant\n"
    body = {
        "query": [prompt + c + "<|im_end|>" for c in COMPLETIONS],
        "prompts": [prompt] * 4,
        "labels": [json.dumps(CODE)] * 4,
    }
    answer = httpx.post(service_url + "/get_reward", json=body, timeout=600).json()
    assert answer["rewards"][0] > 0.5 and answer["rewards"][1:] == [0.0, 0.0, 0.0]
    assert answer["scores"] == answer["rewards"]
    assert answer["extra_logs"]["validity"] == [1.0, 0.0, 0.0, 0.0]
    assert set(answer["extra_logs"]) == {
        "validity",
        "mutant_kill",
        "speed",
        "stability",
        "robustness",
    }
    # Mismatched lengths are the caller's error, unusable code under test too: never a 0.
    short = httpx.post(service_url + "/get_reward", json={**body, "labels": body["labels"][:1]})
    assert short.status_code == 400
    broken = httpx.post(
        service_url + "/get_reward",
        json={"query": [VALID], "labels": ["def clamp(:\n"]},
        timeout=600,
    )
    assert broken.status_code == 422 and "sample 0" in broken.json()["error"]["message"]
