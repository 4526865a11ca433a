#!/usr/bin/env bash
# bash scripts/run_evidence.sh [SEED ...]        (default seeds: 0 1 2)
#
# The default experiment and its three controls (conf/experiment/{oracle_reward,sft_best,
# random_pairs}.yaml) for each seed, then the report in docs/results/. About 10 minutes a seed
# on 2 CPU cores. Reruns resume: finished runs are not redone.
#
# The controls change only what happens after M1, so each starts from the default run's M1 of
# the same seed (same data, base model and SFT, hence the same model), copied rather than
# trained again; their metrics.jsonl therefore share the M1 line with the default run.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)

for seed in "${seeds[@]}"; do
  selfreward seed="$seed"
  for control in oracle_reward sft_best random_pairs; do
    dir="runs/$control/seed$seed"
    if [ ! -e "$dir/m1/sft.done" ]; then
      mkdir -p "$dir"
      cp -r "runs/default/seed$seed/data" "runs/default/seed$seed/m0" "runs/default/seed$seed/m1" "$dir/"
    fi
    selfreward experiment="$control" seed="$seed"
  done
done

selfreward-report runs/default runs/oracle_reward runs/sft_best runs/random_pairs --out docs/results \
  --title "Self-rewarding on the built-in world: the default and its controls"
