# Sourced by the resumable studies (scale_study.sh, kd_study.sh) after they set RUN: the paths they
# share, one thread a lane, the commit each step ran at, and the timed-step record that the
# summaries (scale_summary.py, kd_summary.py) read.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${DATA:-$ROOT/../shared/data}
PIPELINE=${PIPELINE:-$ROOT/.venv/bin/pipeline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

mkdir -p "$RUN"
echo "$(date -u +%FT%TZ) $* $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >> "$RUN/commits.txt"

timed() {  # timed NAME THREADS COMMAND...: append "NAME wall user sys threads" to stage_seconds.tsv
    local name=$1 threads=$2 times; shift 2
    times=$(mktemp)
    { TIMEFORMAT="%R %U %S"; time "$@" 2>&3; } 3>&2 2>"$times"
    printf '%s\t%s\t%s\n' "$name" "$(tr ' ' '\t' < "$times")" "$threads" >> "$RUN/stage_seconds.tsv"
    rm -f "$times"
}

glue_epochs() {  # glue_epochs TASK: the second edition's epochs (SST-2's 67k rows: one pass)
    if [ "$1" = SST-2 ]; then echo 1; else echo 3; fi
}
