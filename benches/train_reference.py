"""PyTorch reference for `unitforge bench train`: the same shapes, modes and step as the candle
bench (random weights, masked next-token cross-entropy, backward, AdamW; greedy generation at
batch 1 and 8), so the figures can be read side by side.

Optional: needs torch and transformers (and peft for the LoRA modes). `unitforge bench train
--python PATH` runs it when PATH can import them; it prints one JSON object.
"""

import argparse
import json
import resource
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=2048),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    # SmolLM2-135M-Instruct's shape (Llama: no q/k/v bias, RoPE base 1e5).
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(shape, mode):
    if shape == "smollm2":
        config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, rope_theta=1e5,
                             tie_word_embeddings=True, initializer_range=0.02)
        model = LlamaForCausalLM(config)
    else:
        config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, rope_theta=1e6,
                             tie_word_embeddings=True, initializer_range=0.02)
        model = Qwen2ForCausalLM(config)
    if mode == "full" or mode == "generate":
        return model
    from peft import LoraConfig, get_peft_model
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                            target_modules=TARGETS))


def train_step_seconds(model, batch, seq_len, steps, vocab):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    inputs = torch.randint(0, vocab, (batch, seq_len))
    targets = torch.randint(0, vocab, (batch, seq_len))
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step > 0:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


@torch.no_grad()
def generation_rate(model, rows, tokens, vocab):
    prompt = torch.randint(0, vocab, (1, 16)).repeat(rows, 1)
    model.generate(prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
    start = time.perf_counter()
    model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return rows * tokens / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", default="tiny,0.5b")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gen-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for shape in args.shapes.split(","):
        vocab = SHAPES[shape]["vocab_size"]
        for mode in (["full", "lora", "generate"] if shape == "tiny" else ["lora", "generate"]):
            model = build(shape, mode)
            row = {"shape": shape, "mode": mode, "torch": torch.__version__,
                   "threads": torch.get_num_threads()}
            if mode == "generate":
                model.eval()
                row["gen_tokens_per_s_b1"] = generation_rate(model, 1, args.gen_tokens, vocab)
                row["gen_tokens_per_s_b8"] = generation_rate(model, 8, args.gen_tokens, vocab)
            else:
                model.train()
                step = train_step_seconds(model, args.batch, args.seq_len, args.steps, vocab)
                row["step_s"] = step
                row["tokens_per_s"] = args.batch * args.seq_len / step
            row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(row)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
