#!/bin/sh
# One stage of the compose pipeline (compose.yaml runs `sh scripts/pipeline.sh STAGE` in the
# unitforge runtime image, working directory /opt/unitforge, volumes at runs/ and models/).
#   PIPELINE=smollm2-quick (default): SmolLM2-135M-Instruct from the published SFT adapter
#     (results/smollm2/sft), a few GRPO steps per branch, evaluation on 24 held-out rows: a
#     quarter of an hour on 2 cores, and a report in which training shows (docs/pipeline.md).
#   PIPELINE=tiny: the tiny models the project initialises, trained from scratch in ~15 minutes
#     (every stage, no skill: a check that the chain works).
#   PIPELINE=smollm2: SmolLM2-135M-Instruct, the configs in configs/smollm2/ (hours on 2 cores).
# Stages: prepare, sft, distill, grpo-mutant, grpo-speed, eval. A failing stage creates the stop
# file, so the reward service (and with it `docker compose up`) ends too; the eval stage creates
# it when the report is written. Extra `--set` overrides for one training stage:
# SET_SFT, SET_DISTILL, SET_GRPO_MUTANT, SET_GRPO_SPEED="k=v k=v"; EVAL_LIMIT: held-out rows;
# START_ROWS: held-out rows that decide whether GRPO starts from SFT or the distilled student.
set -eu
stage=${1:?usage: pipeline.sh prepare|sft|distill|grpo-mutant|grpo-speed|eval}
pipeline=${PIPELINE:-smollm2-quick}
server=${REWARD_SERVER:-http://sandbox:8080}
stop_file=runs/.pipeline-done
uf=unitforge

finish() {
    status=$?
    if [ "$status" -ne 0 ] || [ "$stage" = eval ]; then
        [ "$status" -ne 0 ] && echo "pipeline: stage $stage failed (exit $status); stopping the chain" >&2
        touch "$stop_file"
    fi
    exit "$status"
}
trap finish EXIT

# The --set arguments of SET_<STAGE> (letters, digits and underscores in the variable name).
extra() {
    var="SET_$(echo "$1" | tr 'a-z-' 'A-Z_')"
    eval "values=\${$var:-}"
    for kv in $values; do printf -- '--set %s ' "$kv"; done
}

case "$pipeline" in
tiny)
    base=models/tiny teacher_base=models/tiny-teacher out=runs/tiny
    configs=configs
    sft_steps="--set max_steps=150 --set eval_every=50 --set save_every=150 --set eval_batches=4"
    distill_steps="--set max_steps=30 --set eval_every=15 --set save_every=30 --set eval_batches=4"
    grpo_steps="--set max_steps=8 --set eval_every=8 --set save_every=8 --set grpo.eval_prompts=8"
    eval_limit=${EVAL_LIMIT:-24}
    start_rows=${START_ROWS:-12}
    distilled="distill=$out/distill"
    ;;
smollm2)
    base=models/smollm2-135m-instruct out=runs/smollm2
    configs=configs/smollm2
    sft_steps="" distill_steps="" grpo_steps=""
    eval_limit=${EVAL_LIMIT:-0}
    start_rows=${START_ROWS:-24}
    distilled="distill=$out/distill"
    ;;
smollm2-quick)
    base=models/smollm2-135m-instruct out=runs/smollm2-quick
    configs=configs/smollm2
    published_sft=results/smollm2/sft
    sft_steps="" distill_steps=""
    grpo_steps="--set max_steps=3 --set eval_every=3 --set save_every=3 --set grpo.eval_prompts=4"
    eval_limit=${EVAL_LIMIT:-24}
    distilled=""   # the distill stage is skipped: no GKD checkpoint to evaluate
    ;;
*)
    echo "pipeline: unknown PIPELINE=$pipeline (smollm2-quick, tiny or smollm2)" >&2
    exit 2
    ;;
esac
common="--set progress=false"
echo "pipeline $pipeline: stage $stage"
case "$stage" in
prepare)
    rm -f "$stop_file"
    test -s data/corpus/train.jsonl && test -s data/corpus/eval.jsonl
    echo "corpus: $(wc -l < data/corpus/train.jsonl) training rows, $(wc -l < data/corpus/eval.jsonl) held out"
    if [ "$pipeline" = tiny ]; then
        $uf init-model --config configs/model_tiny.yaml --out "$base"
        $uf init-model --config configs/model_tiny_teacher.yaml --out "$teacher_base"
    else
        if [ ! -f gguf/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
            echo "pipeline: the image has no SmolLM2 weights (gguf/SmolLM2-135M-Instruct.Q4_1.gguf):" \
                "run \`make model\` and then \`make images\` (or PIPELINE=tiny)" >&2
            exit 1
        fi
        $uf import-gguf --gguf gguf/SmolLM2-135M-Instruct.Q4_1.gguf --out "$base"
    fi
    ;;
sft)
    if [ "$pipeline" = tiny ]; then
        # Student and (larger) teacher side by side, one core each.
        RAYON_NUM_THREADS=1 $uf train sft --config $configs/sft.yaml --set base_model=$teacher_base \
            --set output_dir=$out/sft-teacher $sft_steps $common $(extra sft) &
        teacher=$!
        RAYON_NUM_THREADS=1 $uf train sft --config $configs/sft.yaml --set base_model=$base \
            --set output_dir=$out/sft $sft_steps $common $(extra sft)
        wait "$teacher"
    elif [ "$pipeline" = smollm2-quick ]; then
        # SFT takes hours here (PIPELINE=smollm2 runs it); this profile starts from its published
        # adapter (scripts/smollm2-learning.sh, 240 steps of LoRA SFT), merged into the base.
        [ -z "${SET_SFT:-}" ] || echo "pipeline: SET_SFT is not used by $pipeline (its SFT is published)" >&2
        $uf adapter merge --model "$base" --adapter "$published_sft" --out $out/sft
        echo "sft: the published adapter $published_sft merged into $base"
    else
        $uf train sft --config $configs/sft.yaml --set output_dir=$out/sft $common $(extra sft)
    fi
    ;;
distill)
    if [ "$pipeline" = smollm2-quick ]; then
        # A 10-layer student distilled within this profile's budget writes no valid suite
        # (docs/pipeline.md): GRPO starts from SFT, and the report has no GKD checkpoint.
        [ -z "${SET_DISTILL:-}" ] || echo "pipeline: SET_DISTILL is not used by $pipeline" >&2
        echo "sft (the distill stage is skipped in this profile: a student distilled in minutes writes no valid suite)" > $out/grpo-start.txt
        echo "GRPO starts from $(cat $out/grpo-start.txt)"
        exit 0
    fi
    if [ "$pipeline" = tiny ]; then
        $uf train distill --config $configs/distill_gkd.yaml --set base_model=$out/sft \
            --set teacher_model=$out/sft-teacher --set output_dir=$out/distill $distill_steps \
            $common $(extra distill)
    else
        $uf init-model --from $out/sft --keep-layers 10 --out models/smollm2-student-10l
        $uf train distill --config $configs/distill_gkd.yaml --set teacher_model=$out/sft \
            --set output_dir=$out/distill $common $(extra distill)
    fi
    # GRPO starts from the better of the SFT model and the distilled student, by held-out mean
    # pruned composite on the first $start_rows rows (a tie keeps SFT): distillation must not
    # hand GRPO a worse start (docs/pipeline.md).
    for name in sft distill; do
        $uf eval mutation --model $out/$name --server "$server" --limit "$start_rows" \
            --out $out/start-choice/$name/eval_report.json > /dev/null
    done
    gain=$($uf eval compare $out/start-choice/sft $out/start-choice/distill --json |
        awk '/"difference"/ { gsub(",", "", $2); print $2; exit }')
    if awk -v g="${gain:-0}" 'BEGIN { exit !(g > 0) }'; then start=distill; else start=sft; fi
    echo "$start (distill − sft, held-out pruned composite on $start_rows rows: ${gain:-none})" > $out/grpo-start.txt
    echo "GRPO starts from $(cat $out/grpo-start.txt)"
    ;;
grpo-mutant | grpo-speed)
    case "$stage" in grpo-mutant) config=grpo_mutant_max ;; *) config=grpo_speed_stable ;; esac
    start=$(cut -d' ' -f1 $out/grpo-start.txt)
    echo "GRPO starts from $(cat $out/grpo-start.txt)"
    grpo="$uf train grpo --config $configs/$config.yaml --server $server \
        --set base_model=$out/$start --set output_dir=$out/$stage $grpo_steps $common $(extra "$stage")"
    if [ "$pipeline" = tiny ]; then
        # The two branches side by side, one core each.
        RAYON_NUM_THREADS=1 $grpo
    else
        # One branch at a time, with both cores (each alone is as fast as two side by side on
        # one core each, and leaves memory to the sandbox). Branches were once killed for
        # memory here: generation kept the autograd graph of every decoding step in the KV
        # cache, fixed since (a branch now peaks near 6 GB). The lock lives on the runs volume
        # both stage containers mount; the kernel releases it if a holder dies.
        echo "$stage: waiting for the other GRPO branch to finish, if it runs"
        flock runs/.grpo.lock $grpo
    fi
    ;;
eval)
    checkpoints="start=$base sft=$out/sft $distilled grpo-mutant=$out/grpo-mutant grpo-speed=$out/grpo-speed"
    dirs=""
    for entry in $checkpoints; do
        name=${entry%%=*} model=${entry#*=}
        echo "evaluating $name ($model)"
        $uf eval all --model "$model" --server "$server" --limit "$eval_limit" \
            --out $out/eval/$name/eval_report.json
        dirs="$dirs $out/eval/$name"
    done
    $uf eval pareto $dirs --out $out/report
    # Training shows, or does not, in paired differences over the same rows: each trained
    # checkpoint against the start, with 95 % bootstrap intervals.
    {
        printf '\n## Each checkpoint against the start (paired over the same held-out rows)\n\n```\n'
        $uf eval compare $dirs
        printf '```\n\nGRPO started from %s\n' "$(cat $out/grpo-start.txt)"
    } >> $out/report/report.md
    cat $out/report/report.md
    ;;
*)
    echo "pipeline: unknown stage $stage" >&2
    exit 2
    ;;
esac
