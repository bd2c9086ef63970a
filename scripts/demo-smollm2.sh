#!/usr/bin/env bash
# The real model's figures (README "Training on SmolLM2-135M-Instruct"): held-out evaluation of
# SmolLM2-135M-Instruct zero-shot, after LoRA SFT (and a QLoRA SFT for its memory), the 10-layer
# student pruned from the SFT model before and after GKD, and a CE-only control; every model's
# suites scored in the sandbox on the held-out corpus rows. Needs `make model` and the sandbox
# image. Hours on 2 cores: EVAL_LIMIT (default 120, all rows) and the configs' max_steps size it.
# PARTS (default all: zero-shot sft qlora student gkd ce) picks what to run; finished parts are
# skipped, so an interrupted run continues where it stopped.
set -euo pipefail
UF=${UF:-./target/release/unitforge}
OUT=${OUT:-runs/smollm2}
LIMIT=${EVAL_LIMIT:-120}
TOKENS=${EVAL_TOKENS:-384}
PARTS=${PARTS:-zero-shot sft qlora student gkd ce}
mkdir -p "$OUT/eval" runs/demo
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
base=models/smollm2-135m-instruct
[ -f $base/model.safetensors ] || scripts/get-model.sh

evaluate() {  # name model
    [ -f "$OUT/eval/$1/eval_report.json" ] && return 0
    echo "== eval $1 ($2)"
    /usr/bin/time -f "%e s wall, %M KB peak" -o "$OUT/eval/$1.time" \
        $UF eval all --model "$2" --limit "$LIMIT" --max-new-tokens "$TOKENS" --workers 2 \
        --out "$OUT/eval/$1/eval_report.json" > "$OUT/eval/$1.txt"
    cat "$OUT/eval/$1.txt"
}
train() {  # stage name config extra...
    local stage=$1 name=$2 config=$3
    shift 3
    [ -f "$OUT/$name/model.safetensors" ] && return 0
    echo "== train $stage $name"
    /usr/bin/time -f "%e s wall, %M KB peak" -o "$OUT/$name.time" \
        $UF train "$stage" --config "$config" --set output_dir="$OUT/$name" --set progress=false \
        --json "$@" > "runs/demo/smollm2_$name.json"
    cat "$OUT/$name.time"
}

if wanted zero-shot; then evaluate zero-shot $base; fi
if wanted sft; then
    train sft sft configs/smollm2/sft.yaml
    evaluate sft "$OUT/sft"
fi
if wanted qlora; then
    train sft sft-qlora configs/smollm2/sft.yaml --set quantize_base=true --set max_steps=20 \
        --set eval_every=20 --set save_every=20
fi
if wanted student; then
    [ -d models/smollm2-student-10l ] || $UF init-model --from "$OUT/sft" --keep-layers 10 \
        --out models/smollm2-student-10l
    evaluate student-pruned models/smollm2-student-10l
fi
if wanted gkd; then
    train distill distill configs/smollm2/distill_gkd.yaml
    evaluate student-gkd "$OUT/distill"
fi
if wanted ce; then
    train distill distill-ce configs/smollm2/distill_gkd.yaml --set distill.jsd_weight=0 \
        --set distill.rkl_weight=0
    evaluate student-ce "$OUT/distill-ce"
fi

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def report(name):
    try:
        return json.load(open(f"{out}/eval/{name}/eval_report.json"))
    except FileNotFoundError:
        return None
print("| model | valid pytest | pass on their code | mean kill rate | mean composite |")
print("|---|---|---|---|---|")
for name, label in [("zero-shot", "SmolLM2-135M-Instruct, zero-shot"), ("sft", "after LoRA SFT"),
                    ("student-pruned", "10-layer student, pruned"), ("student-gkd", "student after GKD"),
                    ("student-ce", "student, CE-only control")]:
    r = report(name)
    if r is None:
        print(f"| {label} | not run | | | |")
        continue
    f = r["figures"]
    print(f"| {label} | {100*f['valid_pytest_rate']:.1f} % | {100*f['pass_rate']:.1f} % | "
          f"{f['mean_kill_rate']:.3f} | {f['mean_composite']:.3f} |")
r = next(filter(None, map(report, ("sft", "zero-shot", "student-pruned"))), None)
if r: print(f"| reference suites | {100*r['reference']['valid_pytest_rate']:.1f} % | {100*r['reference']['pass_rate']:.1f} % | "
      f"{r['reference']['mean_kill_rate']:.3f} | {r['reference']['mean_composite']:.3f} |")
for name in ("sft", "sft-qlora", "distill", "distill-ce"):
    try:
        s = json.load(open(f"runs/demo/smollm2_{name}.json"))
        t = open(f"{out}/{name}.time").read().strip()
        print(f"{name}: {s['steps']} steps, eval loss {s['first_eval'].get('eval_loss', float('nan')):.3f} -> "
              f"{s['final_eval'].get('eval_loss', float('nan')):.3f}; {t}")
    except (FileNotFoundError, ValueError):  # not run, or still running
        pass
PY
