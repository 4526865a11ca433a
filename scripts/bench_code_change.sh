# bash scripts/bench_code_change.sh runs/judge_mid/seed100 42c3a89 HEAD 2   # M1's SFT and round 1's DPO, two commits side by side
#
# The training stages of a finished run, under two commits of this repository, side by side:
# M1's SFT (`python -m selfreward.stages sft`) and the first round's DPO (`dpo --t 1`), each in a
# fresh copy of the run's inputs, under `accelerate launch` with PROCESSES processes
# (conf/accelerate/ddp.yml), in the order SFT A, SFT B, DPO A, DPO B, one at a time (the machine's
# speed drifts between runs: compare neighbours, and rerun). Prints each stage's wall seconds and
# the Trainer's own train_runtime, then whether B's trained weights are A's to the last bit (a
# change meant to be exact should say "same weights"; each DPO starts from its own SFT's M1).
#
#     bash scripts/bench_code_change.sh RUN_DIR REV_A REV_B [PROCESSES] [WORK_DIR]
#
# RUN_DIR is a run with M2 made (`selfreward ...` with iterations >= 1), whose config.yaml both
# commits accept (a config written by a later commit may hold keys an earlier one does not know).
# WORK_DIR (default: a new temporary folder) receives the two checkouts, the copies and the logs.
set -euo pipefail

if [ $# -lt 3 ]; then
  sed -n '1,/^set -euo/p' "$0" | grep '^#' >&2
  exit 2
fi
run=$(realpath "$1"); rev_a=$2; rev_b=$3; processes=${4:-2}; work=$(realpath -m "${5:-$(mktemp -d)}")
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
for need in config.yaml data m0 m1/eft.done m2/pairs.done; do
  [ -e "$run/$need" ] || { echo "$run has no $need: run the loop through M2's pairs first" >&2; exit 1; }
done
mkdir -p "$work"

copy_inputs() {  # the run's inputs of M1's SFT and round 1's DPO, without their outputs
  local to=$1
  rm -rf "$to"; mkdir -p "$to/m1" "$to/m2"
  cp -r "$run/config.yaml" "$run/data" "$run/m0" "$to/"
  find "$run/m1" -maxdepth 1 \( -name 'eft*' -o -name 'ift_model' \) -exec cp -r {} "$to/m1/" \;
  find "$run/m2" -maxdepth 1 ! -name m2 ! -name model ! -name 'dpo.done' ! -name 'training_log.jsonl' \
    ! -name 'eval*' ! -name metrics.json -exec cp -r {} "$to/m2/" \;
}

for side in a b; do
  rev=$rev_a; [ $side = b ] && rev=$rev_b
  rm -rf "$work/code_$side"; mkdir -p "$work/code_$side"
  git -C "$repo" archive "$rev" | tar -x -C "$work/code_$side"
  copy_inputs "$work/run_$side"
  # Stages run from the work folder: `python -m` puts the current folder first on the import
  # path, and a checkout there would be imported instead of this side's.
  grep -q "^$work/code_$side/selfreward/" <(cd "$work" && PYTHONPATH=$work/code_$side python -c \
    "import selfreward; print(selfreward.__file__)") || { echo "$side does not import its own checkout" >&2; exit 1; }
done

stage() {  # side, stage, extra arguments
  local side=$1 name=$2; shift 2
  local code=$work/code_$side dir=$work/run_$side start end seconds runtime
  start=$(date +%s.%N)
  (cd "$work" && PYTHONPATH=$code python -m accelerate.commands.launch --config_file "$code/conf/accelerate/ddp.yml" \
    --num_processes "$processes" --main_process_port $((29000 + RANDOM % 1000)) \
    -m selfreward.stages "$name" --run-dir "$dir" "$@" > "$work/$side.$name.log" 2>&1) \
    || { echo "$side $name failed: $work/$side.$name.log" >&2; exit 1; }
  end=$(date +%s.%N)
  seconds=$(python -c "print(f'{$end - $start:.1f}')")
  runtime=$(tr '\r' '\n' < "$work/$side.$name.log" | grep -ao "'train_runtime': '[0-9.]*'" | tail -1 | grep -o "[0-9.]*" || true)
  echo "$name $side ($( [ $side = a ] && echo "$rev_a" || echo "$rev_b")): ${seconds} s, train_runtime ${runtime:-?} s"
}

stage a sft; stage b sft
stage a dpo --t 1; stage b dpo --t 1

python - "$work" <<'EOF'
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

work = Path(sys.argv[1])
for model in ("m1", "m2"):
    a, b = (load_file(work / f"run_{s}" / model / "model" / "model.safetensors") for s in "ab")
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff = 0.0 if same or a.keys() != b.keys() else max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{model}: {'same weights' if same else f'weights differ (largest difference {diff:.3g})'}")
EOF
echo "logs and copies in $work"
