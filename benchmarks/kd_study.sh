#!/usr/bin/env bash
# Task distillation that pays (issue 25): the teacher fine-tuned on each task's full training set,
# its logits computed once into one shared kd cache, and the +kd rows (student+kd: the SRA student
# distilled; kd: a BiLSTM of the same architecture from random weights, distilled the same way: Tang
# et al.'s setup), with and without the augmented transfer set. The protocol is the second
# edition's: full training sets, the rate grid searched by seed 0, 3 seeds. Every step is
# resumable: rerun the same command after a stop.
#
#   bash benchmarks/kd_study.sh teacher TASK        # the teacher row: full set, its rate grid, 1 seed
#   bash benchmarks/kd_study.sh rows TASK [N]       # student+kd and kd, transfer set of N variants
#   bash benchmarks/kd_study.sh row TASK NAME SYSTEM [N]  # one system, e.g. the plain student row
#   bash benchmarks/kd_study.sh augment TASK N RATE # the N study: student+kd, 3 seeds at one rate
#
# Epochs: 3 (1 on SST-2, whose 67k rows are 2,100 steps a pass) with the training rows alone; one
# pass over the transfer set when it has variants (N=16 is 17 times the rows of an epoch).
# STUDENT is the SRA student distilled (default: the shipped 1M-sentence student); TEACHER the base
# teacher (default: the bundled all-MiniLM-L6-v2; e.g. ../teachers/all-mpnet-base-v2). The teacher
# reads a pair as one sequence (glue-eval's --teacher-pairs joint, a cross-encoder); PAIRS=siamese
# fine-tunes it the students' way (the +kd rows read the mode from the saved teacher).
set -euo pipefail
RUN=${RUN:-$(cd "$(dirname "$0")/.." && pwd)/runs/kd}
source "$(dirname "$0")/study_common.sh"
STUDENT=${STUDENT:-sra-bilstm-minilm-wiki1m}
epochs() {  # epochs TASK N: one pass over a transfer set with variants, else the second edition's
    if [ "$2" -gt 0 ]; then echo 1; else glue_epochs "$1"; fi
}
suffix() { [ "$1" -gt 0 ] && echo "-aug$1" || true; }
glue() {  # glue TASK NAME N ARGS...: one glue-eval into RUN/glue/TASK/NAME, kept once finished
    local task=$1 name=$2 n=$3; shift 3
    local out=$RUN/glue/$task/$name
    [ -f "$out/results.json" ] && return 0
    timed "glue-$task-$name" "$OMP_NUM_THREADS" "$PIPELINE" glue-eval --glue-dir "$DATA/glue" --tasks "$task" \
        --out "$out" --epochs "$(epochs "$task" "$n")" --resume ${TEACHER:+--teacher "$TEACHER"} "$@"
}
kd() {  # the +kd systems' teacher (the teacher row's own weights), shared cache, transfer set
    echo --kd-teacher "$RUN/glue/$1/teacher/finetuned-teacher" --kd-cache "$RUN/kd-cache" --augment "$2"
}

step=${1:?step: teacher, rows, row or augment}
task=${2:?TASK}
case $step in
teacher)
    glue "$task" teacher 0 --system teacher --seeds 1 --teacher-pairs "${PAIRS:-joint}"
    ;;
rows)
    n=${3:-0}
    glue "$task" "student-kd$(suffix "$n")" "$n" --system "student:$STUDENT+kd" --seeds 3 --grid-seeds 1 \
        $(kd "$task" "$n")
    glue "$task" "kd$(suffix "$n")" "$n" --system "kd:$STUDENT" --seeds 3 --grid-seeds 1 $(kd "$task" "$n")
    ;;
row)
    name=${3:?row TASK NAME SYSTEM [N]}; system=${4:?row TASK NAME SYSTEM [N]}; n=${5:-0}
    glue "$task" "$name" "$n" --system "$system" --seeds 3 --grid-seeds 1 $(kd "$task" "$n")
    ;;
augment)
    n=${3:?augment TASK N RATE}; rate=${4:?augment TASK N RATE}
    glue "$task" "augment-$n" "$n" --system "student:$STUDENT+kd" --seeds 3 --lr "$rate" $(kd "$task" "$n")
    ;;
*) echo "error: unknown step $step" >&2; exit 2 ;;
esac
