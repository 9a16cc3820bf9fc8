#!/usr/bin/env bash
# SRA at scale: one encoding of Wikipedia sentences mixed from several sources (every GLUE file
# excluded, GLUE dev sentences as the out-of-domain set), students trained for one pass over nested
# prefixes of it (the same held-out and out-of-domain sentences for all), each probed frozen on
# CoLA, SST-2, MRPC and RTE; benchmarks/scale_summary.py collects the figures.
# Every step is resumable: rerun the same command after a crash or a stop and finished work is kept.
#
#   bash benchmarks/scale_study.sh encode                # both cores (torchrun, one thread a rank)
#   bash benchmarks/scale_study.sh extend N DIR          # the next N sentences of the same corpus
#       into RUN/DIR (the SHARDS directories excluded: their continuation; the lanes' ranks as
#       encode's), then SHARDS="$RUN/shards $RUN/DIR" makes train's sizes prefixes of all
#   bash benchmarks/scale_study.sh train 300000          # one lane (one thread)
#   bash benchmarks/scale_study.sh train 1000000 NAME OPTIONS...  # a recipe: NAME and its options,
#       e.g. train 1000000 trained-emb --train-embeddings
#   bash benchmarks/scale_study.sh probe 300000 [NAME]
#   bash benchmarks/scale_study.sh glue NAME SYSTEM     # fine-tuned, the second edition's protocol:
#       e.g. glue wiki600k student:sra-bilstm-minilm-wiki600k   (full training sets, rate grid
#       searched by seed 0, 3 seeds, 3 epochs and 1 on SST-2) into RUN/glue/TASK/NAME
#   python benchmarks/scale_summary.py --run $RUN        # summary.json, scaling.png
#
# CORPORA holds the files extracted by ../shared/corpora/extract.py (enwiki-a/b/c.txt); LIMIT is the
# number of sentences encoded (train-rows prefixes of it are the study's sizes); SHARDS the shard
# directories trained on, in order (default RUN/shards); RANKS the encode's one-thread processes.
set -euo pipefail
RUN=${RUN:-$(cd "$(dirname "$0")/.." && pwd)/runs/scale}
source "$(dirname "$0")/study_common.sh"
CORPORA=${CORPORA:-$ROOT/../corpora}
LIMIT=${LIMIT:-1050000}
SOURCES=${SOURCES:-enwiki-a enwiki-b enwiki-c}
EPOCHS=${EPOCHS:-1}
TASKS=${TASKS:-CoLA SST-2 MRPC RTE}
TORCHRUN=${TORCHRUN:-$ROOT/.venv/bin/torchrun}
SHARDS=${SHARDS:-$RUN/shards}
RANKS=${RANKS:-2}
shards=(); for dir in $SHARDS; do shards+=(--shards "$dir"); done
encode() {  # encode OUT LIMIT ARGS...: the study's corpus (GLUE excluded) through the teacher
    local out=$1 limit=$2; shift 2
    local args=()
    for source in $SOURCES; do args+=(--corpus "$CORPORA/$source.txt"); done
    for file in "$DATA"/glue/*/*.tsv; do args+=(--exclude "$file"); done
    "$TORCHRUN" --standalone --nproc-per-node "$RANKS" -m pipeline encode --out "$out" \
        --quiet --mix-sources --limit "$limit" "${args[@]}" "$@" ${ENCODE_OPTIONS:-}
}

step=${1:?usage: scale_study.sh encode | extend N DIR | train SIZE [NAME OPTIONS...] | probe SIZE [NAME] | glue NAME SYSTEM}
case $step in
encode)
    [ -f "$RUN/shards/manifest.json" ] && { echo "encoded: $RUN/shards"; exit 0; }
    ood=()
    for dev in SST-2 CoLA RTE MRPC; do ood+=(--ood-corpus "$DATA/glue/$dev/dev.tsv"); done
    timed encode "$RANKS" encode "$RUN/shards" "$LIMIT" "${ood[@]}" \
        --ood-text-column 'sentence,sentence1,#1 String,3'
    ;;
extend)
    n=${2:?extend N DIR}; dir=${3:?extend N DIR}
    [ -f "$RUN/$dir/manifest.json" ] && { echo "encoded: $RUN/$dir"; exit 0; }
    excluded=()  # the directories it continues (SHARDS may list the new one too: not itself)
    for done_dir in $SHARDS; do [ "$done_dir" = "$RUN/$dir" ] || excluded+=(--exclude "$done_dir"); done
    timed "encode-$dir" "$RANKS" encode "$RUN/$dir" "$n" "${excluded[@]}"
    ;;
train)
    size=${2:?train SIZE}; name=${3:-default}; shift $(( $# < 3 ? $# : 3 ))
    out=$RUN/students/$name-$size  # NAME's options (the recipe) follow it: train 1000000 hidden512 --hidden 512
    [ -f "$out/training_summary.json" ] && { echo "trained: $out"; exit 0; }
    resume=(); [ -f "$out/checkpoint.pt" ] && resume=(--resume)
    timed "train-$name-$size" 1 "$PIPELINE" train-student "${shards[@]}" --out "$out" \
        --train-rows "$size" --epochs "$EPOCHS" --no-progress "${resume[@]}" "$@"
    ;;
probe)
    size=${2:?probe SIZE}; name=${3:-default}
    for task in $TASKS; do
        out=$RUN/probe/$name-$size/$task
        [ -f "$out/probe.json" ] && continue
        timed "probe-$name-$size-$task" 1 "$PIPELINE" glue-eval --probe --glue-dir "$DATA/glue" \
            --tasks "$task" --out "$out" --system "student:$RUN/students/$name-$size"
    done
    ;;
glue)
    name=${2:?glue NAME SYSTEM}; system=${3:?glue NAME SYSTEM}
    for task in $TASKS; do
        out=$RUN/glue/$task/$name
        [ -f "$out/results.json" ] && continue
        epochs=$(glue_epochs "$task")
        timed "glue-$task-$name" 1 "$PIPELINE" glue-eval --glue-dir "$DATA/glue" --tasks "$task" \
            --out "$out" --system "$system" --seeds 3 --grid-seeds 1 --epochs "$epochs" --resume
    done
    ;;
*) echo "error: unknown step $step" >&2; exit 2 ;;
esac
