#!/usr/bin/env bash
# The GRPO demo (stage 3) on the tiny models: both branches from the same GKD checkpoint, side by
# side, then the figures README.md quotes. Needs scripts/demo-train.sh's runs/distill-jsd (stage 2)
# and the Docker sandbox image (`make image`). About an hour on 2 cores. `make demo-grpo`.
set -euo pipefail
UF=${UF:-./target/release/unitforge}
START=${START:-runs/distill-jsd}
[ -f "$START/model.safetensors" ] || { echo "no GKD checkpoint at $START: run scripts/demo-train.sh first" >&2; exit 1; }
mkdir -p runs/demo runs/eval

# One core each: candle's thread pool spins at its barriers, so two multi-threaded trainings on
# two cores slow each other down; the sandbox's two workers share the same cores.
export RAYON_NUM_THREADS=1
$UF train grpo --config configs/grpo_mutant_max.yaml --set base_model="$START" \
  --set progress=false --json > runs/demo/grpo_mutant.json &
$UF train grpo --config configs/grpo_speed_stable.yaml --set base_model="$START" \
  --set progress=false --json > runs/demo/grpo_speed.json &
wait

# Held-out evaluation of every checkpoint on all 120 rows (greedy), and their Pareto picture.
unset RAYON_NUM_THREADS
for entry in sft=runs/sft gkd="$START" grpo-mutant=runs/grpo-mutant grpo-speed=runs/grpo-speed; do
  name=${entry%%=*} model=${entry#*=}
  $UF eval all --model "$model" --workers 2 --out "runs/eval/$name/eval_report.json" \
    > "runs/eval/$name.txt"
done
$UF eval pareto runs/eval/sft runs/eval/gkd runs/eval/grpo-mutant runs/eval/grpo-speed \
  --out runs/report-tiny
cat runs/report-tiny/report.md

python3 - <<'PY'
import json
def lines(path):
    return [json.loads(l) for l in open(path)]
for name, out in (("mutant-max", "runs/grpo-mutant"), ("speed-stable", "runs/grpo-speed")):
    metrics, evals = lines(f"{out}/metrics.jsonl"), lines(f"{out}/eval.jsonl")
    n = len(metrics)
    mean = lambda key, rows: sum(r.get(key, 0.0) for r in rows) / max(len([r for r in rows if key in r]), 1)
    first, last = metrics[: n // 4], metrics[-(n // 4):]
    print(f"{name}: {n} steps; sampled reward {mean('reward', first):.4f} (first quarter) -> "
          f"{mean('reward', last):.4f} (last quarter); validity {mean('validity', first):.3f} -> "
          f"{mean('validity', last):.3f}; frac_reward_zero_std {mean('frac_reward_zero_std', metrics):.3f} "
          f"(after resampling {mean('frac_reward_zero_std_filtered', metrics):.3f}); "
          f"kl {mean('kl', last):.4f}; infra_excluded {sum(m['infra_excluded'] for m in metrics):.0f}")
    print(f"  seconds per step: generation {mean('gen_s', metrics):.2f}, scoring (sum over "
          f"completions) {mean('reward_s', metrics):.2f}, waiting {mean('reward_wait_s', metrics):.2f}, "
          f"training {mean('train_s', metrics):.2f}; overlap groups {mean('overlap_groups', metrics):.2f}")
    for e in (evals[0], evals[-1]):
        print(f"  held out at step {e['step']:>3}: reward {e['eval_reward']:.4f}, validity "
              f"{e['eval_validity']:.3f}, kill {e['eval_mutant_kill']:.3f}, suite CPU "
              f"{e['eval_suite_cpu_ms']:.2f} ms, stability {e['eval_stability']:.3f}")
PY
