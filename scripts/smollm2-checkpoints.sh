# Sourced by scripts/smollm2-learning.sh and scripts/reproduce-eval.sh: where each published
# SmolLM2 checkpoint's adapter applies. A checkpoint directory under $RESULTS names the one it was
# trained on in `trained_on` (none: the base model), and the model it applies to is that chain of
# published adapters merged, in bf16 as published, under models/smollm2-<name>.
base=${base:-models/smollm2-135m-instruct}

# The checkpoint NAME was trained on ("start": the base model itself).
trained_on() {
    local file=$RESULTS/$1/trained_on
    if [ -f "$file" ]; then cat "$file"; else echo start; fi
}

# The weights of checkpoint NAME with its adapters merged (the base model for "start").
merged_model() {
    local name=$1
    if [ "$name" = start ]; then echo "$base"; return; fi
    local out=models/smollm2-$name
    if [ ! -f "$out/model.safetensors" ]; then
        local parent
        parent=$(merged_model "$(trained_on "$name")")
        $UF adapter merge --model "$parent" --adapter "$RESULTS/$name" --out "$out" >&2
    fi
    echo "$out"
}

# The model checkpoint NAME's adapter applies to.
model_under() { merged_model "$(trained_on "$1")"; }
