#!/usr/bin/env python3
"""A real trainer run against the reward service: TRL's GRPOTrainer for a few steps on a tiny,
randomly initialised Llama (built from a config: no hub), with unitforge's composite reward; then
verl's `compute_score` called the way verl's reward loop calls it. Prints the steps' rewards and
the seconds per reward call with and without the service's cache.

    make trl-demo        # a venv with torch, transformers and trl (~6 GB), the service, this

Usage: trl-demo.py SERVICE_URL TOKENIZER_JSON CORPUS_JSONL
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer

from unitforge_client.trl import composite_reward
from unitforge_client.verl import compute_score


def main() -> None:
    url, tokenizer_json, corpus = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_json, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    rows = [json.loads(line) for line in open(corpus)][:16]
    dataset = Dataset.from_list(
        [
            {
                "prompt": f"Write pytest tests for the module `{r['module']}`:\n{r['code']}\n",
                "code": r["code"],
                "module": r["module"],
            }
            for r in rows
        ]
    )
    reward = composite_reward(url)
    calls: list[tuple[float, list]] = []

    async def timed(**kwargs):  # the same reward, timed per call
        started = time.perf_counter()
        values = await reward(**kwargs)
        calls.append((time.perf_counter() - started, values))
        return values

    timed.__name__ = "unitforge_composite"
    config = GRPOConfig(
        output_dir="/tmp/unitforge-trl-demo",
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=48,
        max_steps=4,
        logging_steps=1,
        learning_rate=1e-4,
        report_to=[],
        use_cpu=True,
        bf16=False,
        beta=0.0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[timed],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    trainer.train()
    print(f"TRL {__import__('trl').__version__}: {config.max_steps} GRPO steps in "
          f"{time.perf_counter() - started:.1f} s")
    for log in trainer.state.log_history:
        if "reward" in log:
            print(f"  step {log['step']}: reward {log['reward']:.4f}, "
                  f"unitforge/validity {log.get('unitforge/validity', float('nan')):.3f}")
    first = [seconds for seconds, _ in calls]
    print(f"  reward calls: {len(calls)}, {statistics.median(first):.2f} s median per call "
          f"({len(calls[0][1])} completions each); values {[v for _, vs in calls for v in vs][:8]} …")

    # Four valid suites (the rows' references, as a model would write them), scored three
    # times: the first call runs them, the repeats are the service's cache hits.
    async def three_calls() -> list[float]:
        seconds = []
        for _ in range(3):
            t = time.perf_counter()
            values = await reward(completions=[f"```python\n{r['chosen']}```" for r in rows[:4]],
                                  code=[r["code"] for r in rows[:4]],
                                  module=[r["module"] for r in rows[:4]])
            seconds.append(time.perf_counter() - t)
        print(f"  four reference suites: rewards {[round(v, 3) for v in values]}")
        return seconds

    again = asyncio.run(three_calls())
    print(f"  seconds per reward call: {again[0]:.2f} s computed, "
          f"{statistics.median(again[1:]) * 1000:.0f} ms from the cache")

    # verl: its reward loop calls compute_score(data_source, solution_str, ground_truth,
    # extra_info) per sample; async functions are awaited together.
    import os
    os.environ["UNITFORGE_URL"] = url

    async def verl_loop() -> list[dict]:
        return await asyncio.gather(*(
            compute_score("unitforge", r["chosen"], json.dumps({"code": r["code"], "module": r["module"]}),
                          {"index": i})
            for i, r in enumerate(rows[:8])
        ))

    t = time.perf_counter()
    scores = asyncio.run(verl_loop())
    print(f"verl compute_score on 8 reference suites: scores "
          f"{[round(s['score'], 3) for s in scores]}, {time.perf_counter() - t:.2f} s; keys {sorted(scores[0])}")


if __name__ == "__main__":
    main()
