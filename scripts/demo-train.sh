#!/usr/bin/env bash
# The training demo on the tiny models (stages 1 and 2), on CPU: writes runs/ and prints the
# figures README.md quotes. About an hour on 2 cores. `make demo` runs it.
set -euo pipefail
UF=${UF:-./target/release/unitforge}
mkdir -p runs/demo
[ -f data/corpus/train.jsonl ] || $UF data generate --out data/corpus
$UF init-model --config configs/model_tiny.yaml --out models/tiny
$UF init-model --config configs/model_tiny_teacher.yaml --out models/tiny-teacher

# Two runs at a time, one core each: candle's CPU thread pool spins at its barriers, so two
# multi-threaded runs on two cores slow each other down far more than one thread each does.
export RAYON_NUM_THREADS=1

# Stage 1: the student and (larger) the teacher, both by SFT, side by side.
$UF train sft --config configs/sft.yaml --set progress=false --json > runs/demo/sft.json &
$UF train sft --config configs/sft.yaml --set base_model=models/tiny-teacher \
  --set output_dir=runs/sft-teacher --set max_steps=600 --set progress=false --json \
  > runs/demo/sft_teacher.json &
wait
$UF eval samples --model models/tiny --limit 40 --json > runs/demo/samples_before.json &
$UF eval samples --model runs/sft --score --json > runs/demo/samples_after.json &
wait
# The teacher gets 500 more steps (both cores) so that it is ahead of the student.
RAYON_NUM_THREADS=2 $UF train sft --config configs/sft.yaml --set base_model=runs/sft-teacher \
  --set output_dir=runs/sft-teacher-more --set max_steps=500 --set learning_rate=0.0015 \
  --set warmup_steps=0 --set progress=false --json > runs/demo/sft_teacher_more.json

# Stage 2: JSD-heavy and RKL-heavy distillation of the teacher into the SFT student.
$UF train distill --config configs/distill_gkd.yaml --set output_dir=runs/distill-jsd \
  --set distill.jsd_weight=1.0 --set distill.rkl_weight=0.1 --set progress=false --json \
  > runs/demo/distill_jsd.json &
$UF train distill --config configs/distill_gkd.yaml --set output_dir=runs/distill-rkl \
  --set distill.jsd_weight=0.1 --set distill.rkl_weight=1.0 --set progress=false --json \
  > runs/demo/distill_rkl.json &
wait
# Control: the same 150 steps with CE alone (the teacher only measured).
RAYON_NUM_THREADS=2 $UF train distill --config configs/distill_gkd.yaml \
  --set output_dir=runs/distill-ce --set distill.jsd_weight=0 --set distill.rkl_weight=0 \
  --set progress=false --json > runs/demo/distill_ce.json
$UF eval samples --model runs/distill-jsd --score --json > runs/demo/samples_distill_jsd.json &
$UF eval samples --model runs/distill-rkl --score --json > runs/demo/samples_distill_rkl.json &
wait

python3 - <<'PY'
import json
load = lambda n: json.load(open(f"runs/demo/{n}.json"))
sft, before, after = load("sft"), load("samples_before"), load("samples_after")
print(f"SFT student: held-out loss {sft['first_eval']['eval_loss']:.3f} -> {sft['final_eval']['eval_loss']:.3f}")
print(f"valid pytest from greedy samples: {before['valid_fraction']:.1%} before, "
      f"{after['valid_fraction']:.1%} after ({after['valid_pytest']}/{after['prompts']} held-out prompts); "
      f"{after['scores']['passing_fraction']:.1%} pass on their code, mean kill rate "
      f"{after['scores']['mean_kill_rate']:.3f}")
t, t2 = load("sft_teacher"), load("sft_teacher_more")
print(f"SFT teacher: held-out loss {t['first_eval']['eval_loss']:.3f} -> {t['final_eval']['eval_loss']:.3f} "
      f"-> {t2['final_eval']['eval_loss']:.3f} (500 more steps)")
for name in ("distill_jsd", "distill_rkl", "distill_ce"):
    d = load(name)
    a, b = d["first_eval"], d["final_eval"]
    print(f"{name}: student loss {a['eval_loss']:.3f} -> {b['eval_loss']:.3f}, "
          f"top-1 agreement {a['teacher_top1_agreement']:.3f} -> {b['teacher_top1_agreement']:.3f}, "
          f"JSD {a['eval_jsd']:.3f} -> {b['eval_jsd']:.3f}, RKL {a['eval_rkl']:.3f} -> {b['eval_rkl']:.3f}"
          + ("" if name == "distill_ce" else
             f", valid pytest {load('samples_' + name)['valid_fraction']:.1%}, "
             f"passing {load('samples_' + name)['scores']['passing_fraction']:.1%}"))
PY
