#!/usr/bin/env bash
# The evidence run: encode every Wikipedia-derived corpus in ../shared/data/corpus once, train two
# students from that one shard directory, fine-tune and score teacher / scratch / kd / student /
# student+kd on the GLUE tasks that have train and dev sets, measure speed and size, train the
# ablation of benchmarks/ablation.toml and collect everything into benchmarks/results/.
# Resumable: rerun the same command after a crash and finished steps are skipped.
#
#   bash benchmarks/reproduce.sh                       # the full run (hours on 2 CPU cores)
#   LIMIT=300 MAX_TRAIN=64 PAIR_MAX_TRAIN=64 SEEDS=1 EPOCHS=1 TASKS=RTE ABLATION_STEPS=5 RUN=/tmp/smoke \
#       RESULTS=/tmp/smoke/results bash benchmarks/reproduce.sh   # smoke test
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$ROOT/../shared/data}
RUN=${RUN:-$ROOT/runs/reproduce}
TASKS=${TASKS:-CoLA SST-2 MRPC RTE WNLI}
SEEDS=${SEEDS:-3}
TEACHER_SEEDS=${TEACHER_SEEDS:-1}  # the teacher's fine-tuning costs most: one seed (shared by +kd)
EPOCHS=${EPOCHS:-3}
TEACHER_LR=${TEACHER_LR:-1e-4}  # 3e-5 left MiniLM-L6 at 19.5 MCC on CoLA after 3 epochs: still rising
MAX_TRAIN=${MAX_TRAIN:-4000}   # caps SST-2 (67k rows) and CoLA (8.5k) so the run fits 2.5 h on 2 cores
PAIR_MAX_TRAIN=${PAIR_MAX_TRAIN:-1000}  # MRPC (3.7k), RTE (2.5k); WNLI has 635
LIMIT=${LIMIT:-}
PIPELINE=${PIPELINE:-pipeline}

[ -d "$DATA/corpus" ] || { echo "error: $DATA/corpus not found (set DATA=...)" >&2; exit 2; }
mkdir -p "$RUN"
timed() {  # timed NAME COMMAND...: run it and append its wall time to stage_seconds.tsv
    local name=$1 start; shift; start=$(date +%s)
    "$@"
    # a rerun that only skipped a finished stage must not replace its time
    grep -q "^$name	" "$RUN/stage_seconds.tsv" 2>/dev/null && return
    printf '%s\t%s\n' "$name" "$(( $(date +%s) - start ))" >> "$RUN/stage_seconds.tsv"
}

# 1. One encoding of all corpora (WikiQA has a `Sentence` header; WikiSplit's TSV has none).
#    A finished encoding is kept even if the corpus files were touched since (encode itself would
#    refuse a changed mtime); delete $RUN/shards to encode again.
#    GLUE dev sentences (never trained on) go to shards/ood/: train-student reports the cosine there.
OOD=()
for dev in SST-2/dev.tsv CoLA/dev.tsv RTE/dev.tsv MRPC/dev.tsv; do
    [ -f "$DATA/glue/$dev" ] && OOD+=(--ood-corpus "$DATA/glue/$dev")
done
[ ${#OOD[@]} -gt 0 ] && OOD+=(--ood-text-column 'sentence,sentence1,#1 String,3')
[ -f "$RUN/shards/manifest.json" ] || timed encode "$PIPELINE" encode --out "$RUN/shards" --quiet --text-column Sentence,0 \
    --corpus "$DATA/corpus/wikitext-2-raw" --corpus "$DATA/corpus/gensim-enwiki-sample" \
    --corpus "$DATA/corpus/wikisplit" --corpus "$DATA/corpus/wikiqa" ${LIMIT:+--limit "$LIMIT"} "${OOD[@]}"

# 2. Two students from the same shards (--resume: a finished one is skipped, a stopped one goes on).
for variant in small large; do
    timed "train-$variant" "$PIPELINE" train-student --shards "$RUN/shards" \
        --config "$ROOT/benchmarks/variants.toml" --variant "$variant" --out "$RUN/students" \
        --resume --no-progress
done

# 3. GLUE, one task at a time so a finished task is not redone. A sentence pair costs about four
#    times a single sentence here (two, and longer), so the pair tasks get PAIR_MAX_TRAIN rows and
#    only the default student's systems; the large student is scored on the single-sentence tasks.
S=$RUN/students
for task in $TASKS; do
    [ -f "$RUN/glue/$task/results.json" ] && continue
    rows=$MAX_TRAIN
    systems=(--system teacher --system "scratch:$S/small" --system "kd:$S/small"
             --system "student:$S/small" --system "student:$S/small+kd")
    case $task in
        MRPC|RTE|WNLI|STS-B|QQP|MNLI|QNLI) rows=$PAIR_MAX_TRAIN ;;
        *) systems+=(--system "student:$S/large" --system "student:$S/large+kd") ;;
    esac
    timed "glue-$task" "$PIPELINE" glue-eval --glue-dir "$DATA/glue" --tasks "$task" \
        --out "$RUN/glue/$task" --seeds "$SEEDS" --teacher-seeds "$TEACHER_SEEDS" \
        --epochs "$EPOCHS" --teacher-lr "$TEACHER_LR" --max-train-samples "$rows" "${systems[@]}"
done

# 4. Speed and size of both student sizes, the teacher and a BERT-base-sized model.
#    (kept once measured: delete $RUN/speed.txt to measure again)
[ -s "$RUN/speed.txt" ] || timed speed python "$ROOT/benchmarks/student_speed.py" --shards "$RUN/shards" \
    --sizes 256x1,256x2 | tee "$RUN/speed.txt"

# 5. Ablation: each lever of benchmarks/ablation.toml alone, same step budget, same shards.
timed ablation "$PIPELINE" train-student --shards "$RUN/shards" --config "$ROOT/benchmarks/ablation.toml" \
    --variant all --out "$RUN/ablation" --resume --no-progress ${ABLATION_STEPS:+--max-steps "$ABLATION_STEPS"}

# 6. Tables and plots for benchmarks/RESULTS.md.
python "$ROOT/benchmarks/collect_results.py" --run "$RUN" --out "${RESULTS:-$ROOT/benchmarks/results}"
echo "done: results under $RUN (stage times in $RUN/stage_seconds.tsv)"
