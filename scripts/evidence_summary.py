"""Issue 7's targets from the evidence runs, per seed and on average.

    python scripts/evidence_summary.py runs > docs/results/summary.md

Reads ``runs/<experiment>/seed<S>/metrics.jsonl`` for the default and its four controls and prints
a markdown table (M1, M2, M3 sampled accuracy, M3 - M1, M3 vs M1 head to head, the judge's
held-out pairwise accuracy M1 -> M3, the self-judge's pair accuracy and the share of chosen answers
that are correct per iteration, and the seconds the run spent in its stages), then the mean
gain of each experiment, M1's spread over seeds, the share of the random-pairs-to-oracle distance
the default closes, and the default's head to head and judge trend, and where the runs were made
(each run's ``environment.jsonl``). `scripts/run_evidence.sh` runs it after the report.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from selfreward.report import load_run, mixed_environments

EXPERIMENTS = ("default", "oracle_reward", "rft_oracle", "sft_best", "random_pairs")
SAMPLED = "policy/oracle_accuracy_sampled"


def load(root: Path) -> dict[tuple[str, int], list[dict]]:
    """Finished runs (three metrics lines: M1, M2, M3) by (experiment, seed)."""
    runs = {}
    for experiment in EXPERIMENTS:
        for folder in sorted((root / experiment).glob("seed*")):
            path = folder / "metrics.jsonl"
            rows = [json.loads(line) for line in path.open()] if path.is_file() else []
            if len(rows) == 3:
                runs[experiment, int(folder.name.removeprefix("seed"))] = rows
    return runs


def stage_seconds(rows: list[dict]) -> float | None:
    """Seconds spent in the run's stages: the sum of its ``time/*`` metrics over M1..M3.

    Each stage's seconds as measured when it ran (kept in its done marker), so start-up (imports,
    launching the processes; about 20 s) is not in it, a resumed run shows each stage's own run,
    and a control started from a copy of the default's M1 shows that M1's time. None when the run
    recorded no timers.
    """
    times = [v for row in rows for k, v in row.items() if k.startswith("time/") and v is not None]
    return sum(times) if times else None


def main() -> None:
    root = Path(sys.argv[1])
    runs = load(root)
    seconds = {key: stage_seconds(rows) for key, rows in runs.items()}
    print("| experiment | seed | M1 | M2 | M3 | M3 - M1 (points) | M3 vs M1 head to head, sampled "
          "| judge pairwise M1 -> M3 | pair accuracy M2, M3 | chosen right M2, M3 | stage time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    gains: dict[str, list[float]] = {}
    for (experiment, seed), rows in sorted(runs.items(), key=lambda kv: (EXPERIMENTS.index(kv[0][0]), kv[0][1])):
        acc = [r[SAMPLED] for r in rows]
        gain = 100 * (acc[2] - acc[0])
        gains.setdefault(experiment, []).append(gain)
        pair_acc = [rows[k].get("self_judge/pair_accuracy") for k in (1, 2)]
        chosen_right = [rows[k].get("self_judge/chosen_correct_rate") for k in (1, 2)]
        seconds_cell = f"{seconds[experiment, seed]:.0f}" if seconds[experiment, seed] is not None else "-"
        print(f"| {experiment} | {seed} | {acc[0]:.3f} | {acc[1]:.3f} | {acc[2]:.3f} | {gain:+.1f} | "
              f"{rows[2]['h2h/vs_m1_win_rate_sampled']:.3f} | "
              f"{rows[0]['judge/pairwise_accuracy']:.3f} -> {rows[2]['judge/pairwise_accuracy']:.3f} | "
              + " | ".join(", ".join(f"{p:.2f}" if p is not None else "-" for p in values)
                           for values in (pair_acc, chosen_right))
              + f" | {seconds_cell} |")
    print()
    for experiment, values in gains.items():
        print(f"{experiment}: mean gain {statistics.fmean(values):+.1f} points over {len(values)} seeds, "
              f"gains on {sum(v > 0 for v in values)}")

    def by_seed(experiment: str, model: int, key: str) -> list[float]:
        return [rows[model - 1][key] for (e, _), rows in runs.items() if e == experiment]

    m1 = by_seed("default", 1, SAMPLED)
    if len(m1) > 1:
        print(f"M1 sampled: mean {statistics.fmean(m1):.3f}, std {100 * statistics.stdev(m1):.1f} points "
              f"over {len(m1)} seeds")
    last = {e: by_seed(e, 3, SAMPLED) for e in ("default", "oracle_reward", "random_pairs")}
    if all(last.values()):
        default, oracle, floor = (statistics.fmean(last[e]) for e in ("default", "oracle_reward", "random_pairs"))
        closed = f"{(default - floor) / (oracle - floor):.2f}" if oracle != floor else "undefined"
        print(f"M3 sampled means: default {default:.3f}, oracle {oracle:.3f}, random {floor:.3f}; "
              f"share of the floor-to-bound distance closed: {closed}")
    if m1:
        h2h = by_seed("default", 3, "h2h/vs_m1_win_rate_sampled")
        print(f"default M3 vs M1 head to head (sampled, ties half): {statistics.fmean(h2h):.3f}")
        judge1 = by_seed("default", 1, "judge/pairwise_accuracy")
        judge3 = by_seed("default", 3, "judge/pairwise_accuracy")
        print(f"default judge pairwise accuracy M1 {statistics.fmean(judge1):.4f} -> M3 {statistics.fmean(judge3):.4f}")
    default_seconds = [s for (e, _), s in seconds.items() if e == "default" and s is not None]
    if default_seconds:
        print(f"default stage time: {min(default_seconds):.0f}-{max(default_seconds):.0f} s, mean "
              f"{statistics.fmean(default_seconds):.0f} s over {len(default_seconds)} runs (start-up not counted)")
    # Where the runs were made, from each run's environment.jsonl (selfreward-report reads it too).
    made = [load_run(root / experiment / f"seed{seed}") for experiment, seed in runs]
    made_on: dict[str, int] = {}
    for env in (r.environment for r in made if r.environment):
        versions = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        where = (f"{env.get('cpu')} ({env.get('cpu_capability')} kernels), {env.get('threads')} threads, "
                 f"{env.get('gpus')} GPUs; {versions}")
        made_on[where] = made_on.get(where, 0) + 1
    for where, count in made_on.items():
        print(f"made on: {where} ({count} runs)")
    for warning in mixed_environments(made):
        print(f"warning: {warning}")

if __name__ == "__main__":
    main()
