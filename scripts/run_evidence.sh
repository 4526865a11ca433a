#!/usr/bin/env bash
# bash scripts/run_evidence.sh [SEED ...]        (default seeds: 0 1 2 3 4; 2-3 hours on 2 CPU cores)
# JOBS=2 bash scripts/run_evidence.sh            (two seeds at a time, one torch thread each: for 4 or more
#                                                 cores, since each run of the built-in recipe is two processes)
#
# The default experiment and its four controls (conf/experiment/{oracle_reward,rft_oracle,
# sft_best,random_pairs}.yaml) for each seed, then the report in docs/results/. Reruns resume:
# finished runs are not redone.
#
# The controls change only what happens after M1, so each starts from the default run's M1 of
# the same seed (same data, base model and SFT, hence the same model), copied rather than
# trained again; their metrics.jsonl therefore share the M1 line with the default run.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2 3 4)
jobs="${JOBS:-1}"

run_seed() {
  local seed=$1 threads=()
  # Two torch processes with 2 threads each on 2 cores slow each other down 10-20x.
  [ "$jobs" -gt 1 ] && threads=(threads=1)
  selfreward seed="$seed" "${threads[@]}"
  for control in oracle_reward rft_oracle sft_best random_pairs; do
    local dir="runs/$control/seed$seed"
    if [ ! -e "$dir/m1/sft.done" ]; then
      mkdir -p "$dir"
      cp -r "runs/default/seed$seed/data" "runs/default/seed$seed/m0" "runs/default/seed$seed/m1" "$dir/"
    fi
    selfreward experiment="$control" seed="$seed" "${threads[@]}"
  done
}
export -f run_seed
export jobs
mkdir -p runs

printf '%s\n' "${seeds[@]}" | xargs -P "$jobs" -I{} bash -c 'run_seed "$1" > "runs/evidence_seed$1.log" 2>&1 || { echo "seed $1 failed: see runs/evidence_seed$1.log"; exit 255; }' _ {}

selfreward-report runs/default runs/oracle_reward runs/rft_oracle runs/sft_best runs/random_pairs --out docs/results \
  --title "Self-rewarding on the built-in world: the default and its four controls"
python scripts/evidence_summary.py runs > docs/results/summary.md
