#!/usr/bin/env bash
# bash scripts/run_reward_sources.sh [SEED ...]      (default seeds: 0 1 2; finished runs are not redone)
# JOBS=2 bash scripts/run_reward_sources.sh           (two seeds at a time, one torch thread each)
#
# Issue 10's comparison of reward sources on the built-in world: from the default run's M1 of each
# seed, two iterations with each reward source (conf/reward/): self_consistency, likelihood,
# reward_model, teacher (the seed's M1, frozen, judges every iteration: RLAIF with a fixed judge),
# the random-pairs floor and the oracle bound; the default is the method (self_judge). constitution
# is left out: its prompt (about 400 tokens) does not fit the built-in model's 256 positions. Then
# the report in docs/reward_sources/. Reruns resume.
#
# Every run is on the schema's plain values (recipe=none), as docs/reward_sources/ was measured:
# the built-in recipe's pair rules read the judge's 0-5 scores, which other rewards do not give.
# The runs live in runs/reward_sources/<name>/seed<S>, apart from scripts/run_evidence.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
jobs="${JOBS:-1}"

run_seed() {
  local seed=$1 threads=()
  [ "$jobs" -gt 1 ] && threads=(threads=1)
  local root=runs/reward_sources
  selfreward recipe=none seed="$seed" "${threads[@]}" hydra.run.dir="$root/default/seed$seed"
  for name in reward_self_consistency reward_likelihood reward_model reward_teacher random_pairs oracle_reward; do
    local dir="$root/$name/seed$seed"
    if [ ! -e "$dir/m1/sft.done" ]; then
      mkdir -p "$dir"
      cp -r "$root/default/seed$seed/data" "$root/default/seed$seed/m0" "$root/default/seed$seed/m1" "$dir/"
    fi
    local args=(experiment_name="$name")
    case $name in
      reward_self_consistency) args+=(reward=self_consistency) ;;
      reward_likelihood) args+=(reward=likelihood) ;;
      reward_model) args+=(reward=reward_model) ;;
      reward_teacher) args+=(reward=teacher "reward.model=$dir/m1/model") ;;
      random_pairs) args=(experiment=random_pairs) ;;
      oracle_reward) args=(experiment=oracle_reward) ;;
    esac
    selfreward recipe=none "${args[@]}" seed="$seed" "${threads[@]}" hydra.run.dir="$dir"
  done
}
export -f run_seed
export jobs
mkdir -p runs/reward_sources

printf '%s\n' "${seeds[@]}" | xargs -P "$jobs" -I{} bash -c 'run_seed "$1" > "runs/reward_sources_seed$1.log" 2>&1 || { echo "seed $1 failed: see runs/reward_sources_seed$1.log"; exit 255; }' _ {}

dirs=()
for name in default oracle_reward reward_self_consistency reward_likelihood reward_model reward_teacher random_pairs; do
  for seed in "${seeds[@]}"; do dirs+=("runs/reward_sources/$name/seed$seed"); done
done
selfreward-report "${dirs[@]}" --out docs/reward_sources \
  --title "Reward sources on the built-in world (issue 10): two iterations from the same M1 per seed"
