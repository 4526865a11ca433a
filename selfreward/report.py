"""Reports over finished runs: a markdown table of results and a set of plots.

    selfreward-report runs/default/seed0 runs/smoke --out reports/today --title "Smoke vs default"
    python -m selfreward.report runs --out reports/all

Every path given is a run directory (it holds ``metrics.jsonl``) or a folder searched
recursively for run directories. Runs are grouped by ``experiment_name`` from their
``config.yaml``; the seeds of one experiment are averaged (mean ± sample std). The report reads
run artifacts only; it never imports the training stack, so it is quick to start.

Writes into ``--out``:

* ``results.md``: a table per experiment (rows M1, M2, ...; the key metrics as columns), a
  comparison of the experiments' last models, their gains M1 -> last with pair accuracy and time
  per iteration (:func:`gains_table`), the judge on more held-out prompts where
  ``scripts/judge_heldout.py`` measured it (:func:`heldout_judge_table`), and the run directories used;
* ``judge_metrics.png``, ``policy_accuracy.png``, ``score_distribution.png``,
  ``pair_lengths.png``, ``tie_rate.png``, ``best_of_n.png`` (runs with ``evaluation.best_of_n``).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from selfreward.rundir import (ENVIRONMENT, HELDOUT_JUDGE, SelfRewardError, environment_changes, read_jsonl,
                               write_text)

JUDGE_METRICS = ("judge/pairwise_accuracy", "judge/exact_match", "judge/spearman", "judge/kendall_tau")
POLICY_METRICS = ("policy/oracle_accuracy", "policy/oracle_accuracy_sampled")
# The columns of every results table; the ``h2h/*`` win rates found in the runs are appended.
KEY_METRICS = (
    "policy/oracle_accuracy_sampled",
    "policy/oracle_accuracy",
    *JUDGE_METRICS,
    "judge/parse_failure_rate",
    "pairs/count",
    "pairs/tie_rate",
    "self_judge/pair_accuracy",
    "self_judge/pair_tie_rate",
    "self_judge/chosen_correct_rate",
    "self_judge/oracle_spearman",
)
PLOTS = ("judge_metrics.png", "policy_accuracy.png", "score_distribution.png", "pair_lengths.png", "tie_rate.png",
         "best_of_n.png")
# The Best-of-N / Worst-of-N family of metrics.jsonl: bon/<reward>/oracle_accuracy@<N>.
SELECTION_KEY = re.compile(r"^(bon|won)/(.+)/oracle_accuracy@(\d+)$")
MISSING = "—"
# What one iteration costs: the stages that make M_t+1 from M_t (evaluation left out, so that
# experiments that evaluate more are not charged for it).
ITERATION_STAGES = ("time/prompts_s", "time/candidates_s", "time/judgments_s", "time/pairs_s", "time/judge_pairs_s",
                    "time/dpo_s", "time/sft_best_s", "time/rft_s")


@dataclass(frozen=True)
class Run:
    """One run directory: its experiment, seed and ``metrics.jsonl`` rows (one per model)."""

    path: Path
    experiment: str
    seed: int | None
    rows: list[dict]
    # The first line of ``environment.jsonl`` (where the run started); None for runs made before it.
    environment: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.experiment} seed {self.seed}"

    @property
    def models(self) -> list[int]:
        return sorted(row["model"] for row in self.rows if isinstance(row.get("model"), int))


class Stat(NamedTuple):
    """A metric over the seeds of one experiment: mean, sample std (None below two values), count."""

    mean: float
    std: float | None
    n: int
    integral: bool  # every value was a JSON integer (a count): shown with one decimal


# --- reading runs ---------------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run directory: one holding ``metrics.jsonl``."""
    return (Path(path) / "metrics.jsonl").is_file()


def find_run_dirs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a run directory, else the run directories below it (sorted).

    A run directory found inside another one is left out (a run holds no other runs).
    """
    path = Path(path)
    if is_run_dir(path):
        return [path]
    if not path.is_dir():
        return []
    found = sorted(p.parent for p in path.rglob("metrics.jsonl"))
    return [p for p in found if not any(parent in found for parent in p.parents)]


def load_run(path: str | Path) -> Run:
    """Read a run directory's ``metrics.jsonl`` and, from ``config.yaml``, its experiment and seed.

    A run without ``config.yaml`` is named after its folder, with no seed.
    """
    path = Path(path)
    config_path = path / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    config = config if isinstance(config, dict) else {}
    return Run(
        path=path,
        experiment=str(config.get("experiment_name", path.name)),
        seed=config.get("seed"),
        rows=read_jsonl(path / "metrics.jsonl"),
        environment=next(iter(read_jsonl(path / ENVIRONMENT)), None) if (path / ENVIRONMENT).is_file() else None,
    )


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """The runs found under each path, each once, sorted by experiment, seed and path.

    Raises :class:`SelfRewardError` naming the first path under which no run directory exists.
    """
    dirs: dict[Path, Path] = {}
    for path in paths:
        found = find_run_dirs(path)
        if not found:
            raise SelfRewardError(f"{path}: no run directories (folders holding metrics.jsonl) found")
        dirs.update((d.resolve(), d) for d in found)
    runs = [load_run(d) for d in dirs.values()]
    return sorted(runs, key=lambda r: (r.experiment, r.seed is None, r.seed or 0, str(r.path)))


def model_file(run: Run, model: int, name: str) -> list[dict]:
    """The records of ``m<model>/<name>`` in a run, or ``[]`` where that file does not exist."""
    path = run.path / f"m{model}" / name
    return read_jsonl(path) if path.is_file() else []


# --- aggregation ----------------------------------------------------------------------------


def number(value: Any) -> int | float | None:
    """``value`` if it is a finite number, else None (null, NaN, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def stat(values: Sequence[int | float]) -> Stat:
    """Mean and sample standard deviation of at least one value."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, len(values), all(isinstance(v, int) for v in values))


def aggregate(runs: Iterable[Run]) -> dict[str, dict[int, dict[str, Stat]]]:
    """experiment -> model -> metric -> :class:`Stat` over that experiment's seeds.

    Every numeric metric in the rows is aggregated; a value that is missing, null or not finite
    in some seed is left out, so ``n`` counts the seeds that have it.
    """
    values: dict[str, dict[int, dict[str, list[int | float]]]] = {}
    for run in runs:
        by_model = values.setdefault(run.experiment, {})
        for row in run.rows:
            if not isinstance(row.get("model"), int):
                continue
            metrics = by_model.setdefault(row["model"], {})
            for key, raw in row.items():
                if key != "model" and (value := number(raw)) is not None:
                    metrics.setdefault(key, []).append(value)
    return {
        experiment: {model: {key: stat(v) for key, v in metrics.items()} for model, metrics in sorted(by_model.items())}
        for experiment, by_model in sorted(values.items())
    }


def table_columns(aggregated: dict[str, dict[int, dict[str, Stat]]]) -> list[str]:
    """The key metrics, then every ``h2h/*`` win rate present in any experiment (sorted); the
    win/tie/loss shares behind them stay in ``metrics.jsonl``."""
    h2h = {key for by_model in aggregated.values() for metrics in by_model.values() for key in metrics
           if key.startswith("h2h/") and "win_rate" in key}
    return [*KEY_METRICS, *sorted(h2h)]


def format_stat(s: Stat | None) -> str:
    """``mean ± std (n=seeds)``; the std is left out for a single seed, "—" when missing."""
    if s is None:
        return MISSING
    digits = 1 if s.integral else 3
    spread = f" ± {s.std:.{digits}f}" if s.std is not None else ""
    return f"{s.mean:.{digits}f}{spread} (n={s.n})"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_table(by_model: dict[int, dict[str, Stat]], columns: Sequence[str]) -> str:
    """One experiment: a row per model M1, M2, ..., a column per metric."""
    rows = [[f"M{model}", *(format_stat(metrics.get(key)) for key in columns)]
            for model, metrics in sorted(by_model.items())]
    return _markdown(["model", *columns], rows)


def comparison_table(aggregated: dict[str, dict[int, dict[str, Stat]]], columns: Sequence[str]) -> str:
    """The experiments side by side, each at its last model (the highest M_t any seed reached)."""
    rows = []
    for experiment, by_model in aggregated.items():
        if by_model:
            last = max(by_model)
            rows.append([experiment, f"M{last}", *(format_stat(by_model[last].get(key)) for key in columns)])
    return _markdown(["experiment", "model", *columns], rows)


def gain(run: Run, key: str = "policy/oracle_accuracy_sampled") -> float | None:
    """``key`` of the run's last model minus that of its first (M1 -> M_last), or None."""
    values = {row["model"]: number(row.get(key)) for row in run.rows if isinstance(row.get("model"), int)}
    values = {m: v for m, v in values.items() if v is not None}
    if len(values) < 2:
        return None
    return values[max(values)] - values[min(values)]


def iteration_seconds(run: Run) -> float | None:
    """Mean wall time of the run's iterations: the sum of :data:`ITERATION_STAGES` per model made
    by the loop (M2 onwards), averaged; None where no iteration recorded its times."""
    totals = []
    for row in run.rows:
        times = [number(row.get(key)) for key in ITERATION_STAGES]
        if isinstance(row.get("model"), int) and row["model"] > 1 and any(t is not None for t in times):
            totals.append(sum(t for t in times if t is not None))
    return statistics.fmean(totals) if totals else None


GAINS_COLUMNS = ("gain M1 -> last (points)", "seeds that gain", "pair accuracy", "chosen correct",
                 "seconds per iteration")


def gains_table(runs: Sequence[Run]) -> str:
    """Per experiment over its seeds: the sampled-accuracy gain from M1 to its last model (in
    points, with how many seeds gained), the pairs' accuracy against the oracle and the share of
    chosen answers that are correct (averaged over the iterations, then seeds), and the time per
    iteration. Every cell is computed per seed first, then as mean ± std like the other tables."""
    by_experiment: dict[str, list[Run]] = {}
    for run in runs:
        by_experiment.setdefault(run.experiment, []).append(run)

    def over_iterations(run: Run, key: str) -> float | None:
        values = [v for row in run.rows if (v := number(row.get(key))) is not None]
        return statistics.fmean(values) if values else None

    def cell(values: Iterable[float | None], scale: float = 1.0, digits: int = 3) -> str:
        kept = [v * scale for v in values if v is not None]
        if not kept:
            return MISSING
        s = stat(kept)
        spread = f" ± {s.std:.{digits}f}" if s.std is not None else ""
        return f"{s.mean:.{digits}f}{spread} (n={s.n})"

    rows = []
    for experiment, members in sorted(by_experiment.items()):
        gains = [gain(r) for r in members]
        known = [g for g in gains if g is not None]
        rows.append([experiment,
                     cell(gains, 100.0, digits=1),
                     f"{sum(g > 0 for g in known)} of {len(known)}" if known else MISSING,
                     cell(over_iterations(r, "self_judge/pair_accuracy") for r in members),
                     cell(over_iterations(r, "self_judge/chosen_correct_rate") for r in members),
                     cell((iteration_seconds(r) for r in members), digits=0)])
    return _markdown(["experiment", *GAINS_COLUMNS], rows)


def heldout_judge(run: Run) -> dict[int, dict[int, float]]:
    """Prompts -> model -> the self-judge's pairwise accuracy on that many more held-out prompts,
    from the run's ``judge_heldout/summary.jsonl`` (``scripts/judge_heldout.py``); {} if none."""
    path = run.path / HELDOUT_JUDGE
    measured: dict[int, dict[int, float]] = {}
    for row in read_jsonl(path) if path.is_file() else []:
        value = number(row.get("judge/pairwise_accuracy"))
        if value is not None and isinstance(row.get("model"), int) and isinstance(row.get("prompts"), int):
            measured.setdefault(row["prompts"], {})[row["model"]] = value
    return measured


def heldout_judge_table(runs: Sequence[Run]) -> str | None:
    """Per experiment and number of prompts: the judge's pairwise accuracy on the extra held-out
    prompts, per model (mean ± std over the seeds measured), and its change from each seed's first
    model measured to its last, with how many seeds rose. None when no run has the measurement.
    On the built-in world the loop's own judge set is 100 prompts (a standard error of about 0.02
    a model), which is why this larger measurement exists."""
    cells: dict[tuple[str, int], dict[int, list[float]]] = {}
    changes: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        for prompts, by_model in heldout_judge(run).items():
            group = (run.experiment, prompts)
            for model, value in by_model.items():
                cells.setdefault(group, {}).setdefault(model, []).append(value)
            if len(by_model) > 1:
                changes.setdefault(group, []).append(by_model[max(by_model)] - by_model[min(by_model)])
    if not cells:
        return None
    models = sorted({model for by_model in cells.values() for model in by_model})
    rows = []
    for (experiment, prompts), by_model in sorted(cells.items()):
        change = changes.get((experiment, prompts), [])
        rows.append([experiment, str(prompts),
                     *(format_stat(stat(by_model[m])) if m in by_model else MISSING for m in models),
                     f"{format_stat(stat(change))}, rises on {sum(c > 0 for c in change)} of {len(change)}"
                     if change else MISSING])
    return _markdown(["experiment", "prompts", *(f"M{m}" for m in models), "last - first measured"], rows)


def results_markdown(runs: Sequence[Run], title: str) -> str:
    """The whole ``results.md``: per-experiment tables, the comparison, the plots and the runs."""
    aggregated = aggregate(runs)
    columns = table_columns(aggregated)
    parts = [f"# {title}\n", "Each cell: mean ± sample std over seeds (n = seeds with a value); "
             f"{MISSING} where no seed has the metric.\n"]
    parts += [f"> Warning: {warning}\n" for warning in duplicate_seeds(runs) + mixed_environments(runs)]
    for experiment, by_model in aggregated.items():
        seeds = ", ".join(str(r.seed) for r in runs if r.experiment == experiment)
        parts.append(f"## Experiment `{experiment}` (seeds {seeds})\n")
        parts.append(markdown_table(by_model, columns))
    parts.append("## Comparison: last model of each experiment\n")
    parts.append(comparison_table(aggregated, columns))
    parts.append("## Gains and cost\n")
    parts.append("Sampled oracle accuracy (temperature 0.7) from M1 to the last model, in points; the "
                 "pairs' accuracy against the oracle and the share of chosen answers that are correct, "
                 "averaged over iterations (built-in world); seconds per iteration: "
                 f"{', '.join(k.removeprefix('time/') for k in ITERATION_STAGES)} summed, evaluation "
                 "left out. Mean ± sample std over seeds.\n")
    parts.append(gains_table(runs))
    if (heldout := heldout_judge_table(runs)) is not None:
        parts.append("## The judge on more held-out prompts\n")
        parts.append("The self-judge's pairwise accuracy on extra held-out prompts of the run's world "
                     "(`scripts/judge_heldout.py`, after the runs), per model; the last column is each "
                     "seed's last model measured minus its first. Mean ± sample std over seeds.\n")
        parts.append(heldout)
    parts.append("## Plots\n")
    parts.append("\n".join(f"![{name[:-4]}]({name})" for name in PLOTS) + "\n")
    parts.append("## Run directories\n")
    parts.append("\n".join(f"- `{r.path}` ({r.label}, models {_model_range(r)})" for r in runs) + "\n")
    return "\n".join(parts)


def _model_range(run: Run) -> str:
    models = run.models
    return f"M{models[0]}–M{models[-1]}" if models else "none yet"


def duplicate_seeds(runs: Sequence[Run]) -> list[str]:
    """Warnings for experiments in which a seed appears in more than one run directory."""
    seen: dict[tuple[str, Any], list[Path]] = {}
    for run in runs:
        seen.setdefault((run.experiment, run.seed), []).append(run.path)
    return [f"experiment {experiment!r} has seed {seed} in {len(paths)} run directories "
            f"({', '.join(map(str, paths))}); all are averaged"
            for (experiment, seed), paths in seen.items() if len(paths) > 1]


def mixed_environments(runs: Sequence[Run]) -> list[str]:
    """A warning when the runs started in different environments (CPU kernels, threads, library
    versions: ``environment.jsonl``), whose numbers differ even at the same seed; runs without the
    record are not judged."""
    recorded = [r for r in runs if r.environment]
    if not recorded:
        return []
    first = recorded[0]
    others = [(r, environment_changes(first.environment, r.environment)) for r in recorded[1:]]
    others = [(r, changes) for r, changes in others if changes]
    if not others:
        return []
    run, changes = others[0]
    return [f"the runs started in more than one environment: {len(others)} of {len(recorded)} differ from "
            f"{first.path} ({run.path}: {'; '.join(changes)}); the same seed gives other numbers elsewhere"]


# --- plots ----------------------------------------------------------------------------------


def _errorbar_lines(ax, aggregated: dict[str, dict[int, dict[str, Stat]]], key: str, *, style: str = "-o",
                    suffix: str = "") -> None:
    """One line per experiment: the mean of ``key`` per model, with the seeds' std as error bars.

    An experiment keeps its colour (its place in the sorted list) in every plot.
    """
    for index, (experiment, by_model) in enumerate(aggregated.items()):
        points = [(model, metrics[key]) for model, metrics in by_model.items() if key in metrics]
        if points:
            ax.errorbar([m for m, _ in points], [s.mean for _, s in points], yerr=[s.std or 0.0 for _, s in points],
                        fmt=style, color=f"C{index % 10}", capsize=3, label=experiment + suffix)


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("model M_t")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.has_data():
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _per_run(runs: Sequence[Run], value) -> dict[str, dict[int, dict[str, Stat]]]:
    """Aggregate a per-run measure ``value(run) -> {model: {key: float}}`` like :func:`aggregate`."""
    return aggregate(Run(r.path, r.experiment, r.seed, [{"model": m, **v} for m, v in value(r).items()])
                     for r in runs)


def pair_lengths(run: Run) -> dict[int, dict[str, float]]:
    """Mean length (characters) of the chosen and rejected responses of each iteration's pairs."""
    lengths = {}
    for model in run.models:
        pairs = model_file(run, model, "pairs.jsonl")
        if pairs:
            lengths[model] = {"chosen": statistics.fmean(len(p["chosen"]) for p in pairs),
                              "rejected": statistics.fmean(len(p["rejected"]) for p in pairs)}
    return lengths


def candidate_scores(run: Run) -> dict[int, list[float | None]]:
    """The self-judge's mean score of every candidate, per iteration (None where none parsed)."""
    scores = {}
    for model in run.models:
        judged = model_file(run, model, "judgments.jsonl")
        if judged:
            scores[model] = [number(j.get("score")) for j in judged]
    return scores


def write_plots(runs: Sequence[Run], out: Path) -> list[Path]:
    """Write the five plots of (at least one of) ``runs`` into ``out``; return their paths.

    Figures are drawn on matplotlib's Agg canvas without pyplot, so a caller's backend (a
    notebook's, say) is left as it is.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    aggregated = aggregate(runs)
    paths = []

    def figure(rows: int, cols: int, size: tuple[float, float], **kwargs):
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(rows, cols, squeeze=False, **kwargs).flat

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        paths.append(out / name)

    fig, axes = figure(2, 2, (10, 7.5))
    for ax, key in zip(axes, JUDGE_METRICS):
        _errorbar_lines(ax, aggregated, key)
        _finish(ax, key, key.split("/")[1])
    fig.suptitle("Judge quality on the held-out judge set (mean ± std over seeds)")
    save(fig, "judge_metrics.png")

    fig, axes = figure(1, 2, (10, 4), sharey=True)
    for ax, key, name in zip(axes, POLICY_METRICS, ("greedy", "sampled")):
        _errorbar_lines(ax, aggregated, key)
        _finish(ax, f"oracle accuracy, {name}", "accuracy")
    save(fig, "policy_accuracy.png")

    fig, axes = figure(1, len(aggregated), (5 * len(aggregated), 4))
    for ax, experiment in zip(axes, aggregated):
        _score_histogram(ax, [r for r in runs if r.experiment == experiment])
        ax.set_title(f"self-judge scores: {experiment}")
    save(fig, "score_distribution.png")

    fig, (ax,) = figure(1, 1, (6, 4))
    lengths = _per_run(runs, pair_lengths)
    _errorbar_lines(ax, lengths, "chosen", suffix=": chosen")
    _errorbar_lines(ax, lengths, "rejected", style="--s", suffix=": rejected")
    _finish(ax, "pair response length (pairs that made M_t)", "mean characters")
    save(fig, "pair_lengths.png")

    fig, (ax,) = figure(1, 1, (6, 4))
    _errorbar_lines(ax, aggregated, "pairs/tie_rate")
    _finish(ax, "tie rate of the iteration that made M_t", "share of prompts tied")
    save(fig, "tie_rate.png")

    fig, (ax,) = figure(1, 1, (7, 4.5))
    _selection_curves(ax, aggregated)
    save(fig, "best_of_n.png")
    return paths


def selection_curves(aggregated: dict[str, dict[int, dict[str, Stat]]]) -> dict[tuple, list[tuple[int, Stat]]]:
    """(experiment, model, "bon" or "won", reward) -> [(N, Stat), ...] sorted by N, from the
    ``bon/<reward>/oracle_accuracy@N`` and ``won/...`` metrics."""
    curves: dict[tuple, list[tuple[int, Stat]]] = {}
    for experiment, by_model in aggregated.items():
        for model, metrics in by_model.items():
            for key, value in metrics.items():
                if match := SELECTION_KEY.match(key):
                    kind, reward, n = match.groups()
                    curves.setdefault((experiment, model, kind, reward), []).append((int(n), value))
    return {key: sorted(points) for key, points in sorted(curves.items())}


def _selection_curves(ax, aggregated: dict[str, dict[int, dict[str, Stat]]]) -> None:
    """Oracle accuracy against N: Best-of-N solid, Worst-of-N dashed; one colour per experiment,
    one marker per model."""
    experiments = list(aggregated)
    markers = "os^vDP*X"
    for (experiment, model, kind, reward), points in selection_curves(aggregated).items():
        ax.errorbar([n for n, _ in points], [s.mean for _, s in points], yerr=[s.std or 0.0 for _, s in points],
                    fmt=("-" if kind == "bon" else "--") + markers[(model - 1) % len(markers)],
                    color=f"C{experiments.index(experiment) % 10}", capsize=3,
                    label=f"{experiment} M{model}: {'best' if kind == 'bon' else 'worst'} of N by {reward}")
    ax.set_xscale("log", base=2)
    ax.set_title("Best-of-N (solid) and Worst-of-N (dashed), mean ± std over seeds")
    ax.set_xlabel("N (answers sampled per held-out prompt)")
    ax.set_ylabel("oracle accuracy of the answer picked")
    if ax.has_data():
        ax.legend(fontsize="x-small")
    else:
        ax.text(0.5, 0.5, "no data (evaluation.best_of_n=true measures it)", ha="center", va="center",
                transform=ax.transAxes)


def _score_histogram(ax, runs: Sequence[Run]) -> None:
    """Overlaid histograms of candidate mean scores, one per iteration, pooled over seeds."""
    import numpy as np

    per_model: dict[int, list[float | None]] = {}
    for run in runs:
        for model, scores in candidate_scores(run).items():
            per_model.setdefault(model, []).extend(scores)
    scored = [s for scores in per_model.values() for s in scores if s is not None]
    if scored:
        # Means of a few integer judgments lie on a grid: one bin per grid step, centred on it.
        values = sorted(set(scored))
        gaps = [high - low for low, high in zip(values, values[1:])]
        width = max(min(gaps, default=1.0), (values[-1] - values[0]) / 40)
        bins = np.arange(values[0] - width / 2, values[-1] + width, width)
        for model, scores in sorted(per_model.items()):
            values = [s for s in scores if s is not None]
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5,
                    label=f"judged by M{model - 1} ({len(values)} scored, {len(scores) - len(values)} unscored)")
    ax.set_xlabel("candidate score (mean of parsed judgments)")
    ax.set_ylabel("candidates")
    if scored:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no scored candidates", ha="center", va="center", transform=ax.transAxes)


# --- command line ---------------------------------------------------------------------------


def write_report(paths: Iterable[str | Path], out: str | Path, title: str) -> list[Path]:
    """Read the runs under ``paths`` and write ``results.md`` and the plots into ``out``."""
    runs = load_runs(paths)
    for warning in duplicate_seeds(runs):
        print(f"selfreward-report: warning: {warning}", file=sys.stderr)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.md", results_markdown(runs, title))
    return [out / "results.md", *write_plots(runs, out)]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``selfreward-report`` command; returns the exit status (2 for bad input)."""
    parser = argparse.ArgumentParser(prog="selfreward-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="a run directory, or a folder searched recursively for run directories")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for results.md and the plots")
    parser.add_argument("--title", default="Self-rewarding LM results", help="heading of results.md")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.runs, args.out, args.title)
    except SelfRewardError as e:
        print(f"selfreward-report: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
