#!/usr/bin/env bash
# `make reproduce-eval`: evaluate the published SmolLM2 checkpoints of results/smollm2/ again, on
# every held-out row with the same seed and K (so the same suites), and print the table: each
# checkpoint as written and pruned with 95 % intervals over rows, beside the human reference
# suites and the trivial suite, and the paired differences against SFT. No training.
# TABLE_ONLY=1 prints the table of the reports already in results/smollm2/ instead.
set -euo pipefail
UF=${UF:-./target/release/unitforge}
RESULTS=${RESULTS:-results/smollm2}
OUT=${OUT:-runs/reproduce-eval}
K=${EVAL_SAMPLES:-4}
LIMIT=${EVAL_LIMIT:-0}
TOKENS=${EVAL_TOKENS:-320}
base=models/smollm2-135m-instruct
# shellcheck source=scripts/smollm2-checkpoints.sh
. scripts/smollm2-checkpoints.sh
order="start sft raft raft-repair grpo-mutant-uncredited grpo-speed grpo-mutant"

if [ "${TABLE_ONLY:-0}" = 1 ]; then
    reports=$RESULTS
else
    reports=$OUT
    [ -f $base/model.safetensors ] || make model
    for name in $order; do
        dir=$RESULTS/$name
        [ -d "$dir" ] || continue
        model=$(model_under "$name")
        adapter=$dir
        [ "$name" = start ] && adapter=""
        echo "== eval $name"
        $UF eval all --model $model ${adapter:+--adapter $adapter} --samples "$K" --limit "$LIMIT" \
            --max-new-tokens "$TOKENS" --workers 2 --out "$OUT/$name/eval_report.json" > /dev/null
    done
fi
dirs=""
for name in $order; do [ -f "$reports/$name/eval_report.json" ] && dirs="$dirs $reports/$name"; done
[ -n "$dirs" ] || { echo "no evaluation reports in $reports" >&2; exit 1; }
$UF eval pareto $dirs --out "$reports/report" > /dev/null
cat "$reports/report/report.md"
others=""
for name in raft raft-repair grpo-mutant-uncredited grpo-speed grpo-mutant; do [ -f "$reports/$name/eval_report.json" ] && others="$others $reports/$name"; done
if [ -f "$reports/sft/eval_report.json" ] && [ -n "$others" ]; then
    echo
    echo "Paired differences against SFT (95 % bootstrap intervals over rows):"
    $UF eval compare "$reports/sft" $others
fi
