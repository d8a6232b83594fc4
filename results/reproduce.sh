#!/usr/bin/env bash
# Rebuild everything the embedded default ships and every committed report, from scratch, on CPU.
# Order matters: weights -> golden rankings -> predictor -> tokens -> reports. About 2.5 hours on 2 cores
# (the model's training is most of it; skip it with SKIP_TRAINING=1 to reuse the shipped weights).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
ASSETS=cliprank/models/assets
DATASETS=(digits textiles faces)

if [[ "${SKIP_TRAINING:-0}" != 1 ]]; then
    python -m cliprank.models.train_embedded --out runs/embedded --steps 3000 --extra-steps 1000 --extra-cycles 3
    cp runs/embedded/cliprank-tiny.safetensors runs/embedded/cliprank-tiny.recipe.json "$ASSETS/"
fi

# Everything below is rebuilt for the weights above: stale rankings, predictor, tokens and reports go first
# (each of them records the model fingerprint, and cliprank refuses to mix them with other weights).
rm -rf "$ASSETS/rankings" "$ASSETS/tokens" "$ASSETS/cliprank-tiny.predictor.safetensors" runs/rankings \
    results/embedded results/paper-setting results/ci

# Golden rankings (block 3, 2x2 units, 10 patches per step, 40% removed, similarity score):
# the test splits ship as the oracle; train and val are the predictor's training data.
# One process per core, one thread each: the fastest way to run the narrow model's search on a CPU.
search() { torchrun --standalone --nproc_per_node 2 -m cliprank search --threads 1 --max-batch-tokens 4096 "$@"; }
for dataset in "${DATASETS[@]}"; do
    search --dataset "$dataset" --split test --out "$ASSETS/rankings/$dataset-test.rankings"
    for split in train val; do
        search --dataset "$dataset" --split "$split" --out "runs/rankings/$dataset-$split.rankings"
    done
done
rm -rf "$ASSETS"/rankings/*.logs

cliprank train-predictor --rankings runs/rankings --out "$ASSETS/cliprank-tiny.predictor.safetensors"

# Learned tokens for the predictor: the paper's setup (40% removed) and the default report's budgets.
cliprank add-tokens --method "predictor(keep=0.6)" --out "$ASSETS/tokens/predictor-keep0.6.tokens.safetensors"
for budget in 0.6 0.7 0.8 0.9; do
    cliprank add-tokens --method predictor --budget "$budget" --out "$ASSETS/tokens/predictor-b$budget.tokens.safetensors"
done

cliprank evaluate --out results/embedded
cliprank evaluate --recipe paper-embedded --out results/paper-setting
cliprank evaluate --recipe ci --out results/ci

# The side studies results/README.md reports (runs/, not committed): the authors' predictor configuration
# beside cliprank's on the same test images, EViT's fusion variants, and a predictor trained on digits alone.
# Their numbers are read with `cliprank compare REPORT --methods A,B` (and, across two reports, the same
# paired tests in cliprank.report.significance).
cliprank train-predictor --preset authors --rankings runs/rankings --out runs/predictor-authors.safetensors
for which in authors cliprank; do
    predictor=runs/predictor-authors.safetensors
    [[ $which == cliprank ]] && predictor="$ASSETS/cliprank-tiny.predictor.safetensors"
    cliprank evaluate --method "predictor,predictor(keep=0.6)" --budget 0.6,0.7,0.8,0.9 --predictor "$predictor" \
        --no-speed --no-flops --patch-maps 0 --out "runs/predictor-$which-eval"
done
cliprank evaluate --method "evit,evit(normalize_fused=true),evit(fuse=false)" --budget 0.802,0.7 \
    --no-speed --no-flops --patch-maps 0 --out runs/evit-fusion
cliprank train-predictor --dataset digits --rankings runs/rankings --out runs/pred-digits.safetensors
cliprank evaluate --method predictor --budget 0.7 --predictor runs/pred-digits.safetensors \
    --no-speed --no-flops --patch-maps 0 --out runs/transfer-digits
