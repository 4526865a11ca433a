"""The report: aggregation over seeds on hand-computed rows, and the command on a real run."""

import subprocess
import sys
from pathlib import Path

import pytest

from selfreward.report import (
    KEY_METRICS,
    PLOTS,
    Run,
    aggregate,
    selection_curves,
    comparison_table,
    duplicate_seeds,
    find_run_dirs,
    format_stat,
    gain,
    gains_table,
    heldout_judge_table,
    iteration_seconds,
    load_run,
    main,
    markdown_table,
    mixed_environments,
    results_markdown,
    table_columns,
)


def make_run(experiment, seed, rows):
    return Run(path=Path(f"runs/{experiment}/seed{seed}"), experiment=experiment, seed=seed, rows=rows)


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


def test_two_seeds_give_mean_and_sample_std():
    runs = [make_run("a", 0, [{"model": 1, "judge/spearman": 0.2}]),
            make_run("a", 1, [{"model": 1, "judge/spearman": 0.4}])]
    s = aggregate(runs)["a"][1]["judge/spearman"]
    assert s.mean == pytest.approx(0.3)
    assert s.std == pytest.approx(0.1414214)
    assert s.n == 2
    assert format_stat(s) == "0.300 ± 0.141 (n=2)"


def test_missing_null_and_nan_values_are_left_out():
    runs = [make_run("a", 0, [{"model": 1, "pairs/count": None, "judge/spearman": float("nan")},
                              {"model": 2, "pairs/count": 10, "judge/spearman": 0.5}]),
            make_run("a", 1, [{"model": 1},
                              {"model": 2, "pairs/count": 13, "new/key": "text"}])]
    agg = aggregate(runs)["a"]
    assert "pairs/count" not in agg[1] and "judge/spearman" not in agg[1]
    assert agg[2]["judge/spearman"].n == 1
    assert format_stat(agg[2]["judge/spearman"]) == "0.500 (n=1)"  # one seed: no std
    assert format_stat(agg[2]["pairs/count"]) == "11.5 ± 2.1 (n=2)"  # a count: one decimal
    assert "new/key" not in agg[2]
    table = markdown_table(agg, KEY_METRICS)
    m1 = next(line for line in table.splitlines() if line.startswith("| M1 |"))
    assert m1.count("—") == len(KEY_METRICS)


def test_tables_group_by_experiment_and_add_h2h_columns():
    runs = [make_run("dpo", 0, [{"model": 1, "policy/oracle_accuracy": 0.1},
                                {"model": 2, "policy/oracle_accuracy": 0.3, "h2h/win_rate": 0.6,
                                 "h2h/win": 0.5}]),
            make_run("dpo", 1, [{"model": 1, "policy/oracle_accuracy": 0.2},
                                {"model": 2, "policy/oracle_accuracy": 0.5, "h2h/win_rate": 0.8}]),
            make_run("sft", 0, [{"model": 1, "policy/oracle_accuracy": 0.1}])]
    agg = aggregate(runs)
    assert list(agg) == ["dpo", "sft"]
    columns = table_columns(agg)
    assert columns == [*KEY_METRICS, "h2h/win_rate"]  # win/tie/loss shares stay in metrics.jsonl
    table = markdown_table(agg["dpo"], columns)
    assert table.splitlines()[0] == "| model | " + " | ".join(columns) + " |"
    assert "| M2 | — | 0.400 ± 0.141 (n=2) |" in table
    assert table.rstrip().endswith("0.700 ± 0.141 (n=2) |")
    comparison = comparison_table(agg, columns).splitlines()
    assert comparison[2].startswith("| dpo | M2 | — | 0.400 ± 0.141 (n=2) |")
    assert comparison[3].startswith("| sft | M1 | — | 0.100 (n=1) |")


def test_gains_pair_accuracy_and_time_per_iteration_by_hand():
    a0 = make_run("a", 0, [
        {"model": 1, "policy/oracle_accuracy_sampled": 0.60, "time/sft_s": 300.0},
        {"model": 2, "policy/oracle_accuracy_sampled": 0.70, "self_judge/pair_accuracy": 0.5,
         "time/prompts_s": 10.0, "time/candidates_s": 20.0, "time/dpo_s": 30.0, "time/eval_s": 99.0},
        {"model": 3, "policy/oracle_accuracy_sampled": 0.64, "self_judge/pair_accuracy": 0.7,
         "time/prompts_s": 20.0, "time/judgments_s": 20.0, "time/pairs_s": 1.0, "time/dpo_s": 39.0}])
    a1 = make_run("a", 1, [
        {"model": 1, "policy/oracle_accuracy_sampled": 0.50},
        {"model": 2, "policy/oracle_accuracy_sampled": 0.48, "self_judge/pair_accuracy": None}])
    assert gain(a0) == pytest.approx(0.04)  # last (M3) minus M1, not the best model
    assert gain(a1) == pytest.approx(-0.02)
    assert gain(make_run("b", 0, [{"model": 1, "policy/oracle_accuracy_sampled": 0.5}])) is None
    assert iteration_seconds(a0) == pytest.approx(70.0)  # (60 + 80) / 2: M1's SFT and eval left out
    assert iteration_seconds(a1) is None
    row = gains_table([a0, a1]).splitlines()[2]
    # gains 4 and -2 points: mean 1, sample std 4.243; pair accuracy only seed 0's (0.5 + 0.7) / 2
    assert row == "| a | 1.0 ± 4.2 (n=2) | 1 of 2 | 0.600 (n=1) | — | 70 (n=1) |"


def test_judge_on_more_held_out_prompts_by_hand(tmp_path):
    from selfreward.rundir import HELDOUT_JUDGE, write_jsonl

    def run(seed, summary):
        path = tmp_path / f"seed{seed}"
        if summary is not None:
            write_jsonl(path / HELDOUT_JUDGE, summary)
        return Run(path=path, experiment="a", seed=seed, rows=[{"model": 1}])

    runs = [run(0, [{"model": 1, "prompts": 1000, "judge/pairwise_accuracy": 0.80},
                    {"model": 2, "prompts": 1000, "judge/pairwise_accuracy": 0.82},
                    {"model": 3, "prompts": 1000, "judge/pairwise_accuracy": 0.85},
                    {"model": 1, "prompts": 200, "judge/pairwise_accuracy": 0.90},
                    {"model": 2, "prompts": 200, "judge/pairwise_accuracy": float("nan")},
                    {"model": None, "prompts": 200, "judge/pairwise_accuracy": 0.5}]),
            run(1, [{"model": 1, "prompts": 1000, "judge/pairwise_accuracy": 0.70},
                    {"model": 3, "prompts": 1000, "judge/pairwise_accuracy": 0.66}]),
            run(2, None)]
    lines = heldout_judge_table(runs).splitlines()
    assert lines[0] == "| experiment | prompts | M1 | M2 | M3 | last - first measured |"
    # seed 0 rises by 0.05, seed 1 falls by 0.04: mean 0.005, sample std 0.0636; seed 2 has no file
    assert lines[2] == ("| a | 200 | 0.900 (n=1) | — | — | — |")
    assert lines[3] == ("| a | 1000 | 0.750 ± 0.071 (n=2) | 0.820 (n=1) | 0.755 ± 0.134 (n=2) | "
                        "0.005 ± 0.064 (n=2), rises on 1 of 2 |")
    assert "## The judge on more held-out prompts" in results_markdown(runs, "title")
    assert heldout_judge_table(runs[2:]) is None
    assert "more held-out prompts" not in results_markdown(runs[2:], "title")


def test_duplicate_seeds_are_reported():
    runs = [make_run("a", 0, []), make_run("a", 0, []), make_run("a", 1, [])]
    (warning,) = duplicate_seeds(runs)
    assert "'a' has seed 0 in 2 run directories" in warning
    assert f"> Warning: {warning}" in results_markdown(runs, "title")


def test_runs_from_different_environments_are_reported():
    here = {"cpu_capability": "AVX512", "threads": 1, "packages": {"torch": "2.13.0"}, "started": "a"}
    same = {**here, "started": "b", "entry": "stage dpo --t 1"}  # another start, same environment
    avx2 = {**here, "cpu_capability": "AVX2", "packages": {"torch": "2.12.0"}}
    a, b, c = (Run(Path(f"runs/a/seed{s}"), "a", s, [], env) for s, env in enumerate([here, same, avx2]))
    old = make_run("a", 3, [])  # made before environment.jsonl: not judged
    assert mixed_environments([a, b, old]) == []
    (warning,) = mixed_environments([a, b, c, old])
    assert "1 of 3 differ from runs/a/seed0" in warning
    assert "runs/a/seed2: cpu_capability: 'AVX512' -> 'AVX2'; torch: 2.13.0 -> 2.12.0" in warning
    assert f"> Warning: {warning}" in results_markdown([a, b, c, old], "title")


def test_report_on_a_real_run(run_dir, tmp_path, capsys):
    # The parent folder is searched; the run is found once although it is given twice.
    out = tmp_path / "report"
    assert main([str(run_dir.parent.parent), str(run_dir), "--out", str(out), "--title", "Tiny"]) == 0
    assert find_run_dirs(run_dir.parent.parent) == [run_dir]
    assert load_run(run_dir).environment["entry"] == "selfreward"  # where the run started
    text = (out / "results.md").read_text(encoding="utf-8")
    assert text.startswith("# Tiny\n")
    experiment = "tiny"  # the shared run's experiment_name
    assert f"## Experiment `{experiment}` (seeds 0)" in text
    for model in ("M1", "M2", "M3"):
        assert f"| {model} | " in text
    assert f"| {experiment} | M3 | " in text
    assert f"- `{run_dir}`" in text
    assert "Warning" not in text
    for name in PLOTS:
        assert (out / name).stat().st_size > 0, name
    assert "wrote 7 files" in capsys.readouterr().out


def test_best_of_n_curves_by_reward_and_model_sorted_by_n(tmp_path):
    rows = [{"model": 1, "bon/likelihood/oracle_accuracy@4": 0.5, "bon/likelihood/oracle_accuracy@1": 0.25,
             "won/likelihood/oracle_accuracy@1": 0.25, "policy/oracle_accuracy": 0.3},
            {"model": 2, "bon/self_judge/oracle_accuracy@2": 0.4}]
    runs = [make_run("a", 0, rows), make_run("a", 1, [{"model": 1, "bon/likelihood/oracle_accuracy@1": 0.75}])]
    curves = selection_curves(aggregate(runs))
    assert list(curves) == [("a", 1, "bon", "likelihood"), ("a", 1, "won", "likelihood"), ("a", 2, "bon", "self_judge")]
    assert [(n, s.mean, s.n) for n, s in curves[("a", 1, "bon", "likelihood")]] == [(1, 0.5, 2), (4, 0.5, 1)]
    from selfreward.report import write_plots

    assert tmp_path / "best_of_n.png" in write_plots(runs, tmp_path)
    assert (tmp_path / "best_of_n.png").stat().st_size > 0


def test_a_folder_without_runs_is_an_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "selfreward.report", str(tmp_path), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"selfreward-report: error: {tmp_path}: no run directories (folders holding metrics.jsonl) found"]
    assert not (tmp_path / "out").exists()


def test_evidence_summary_names_where_the_runs_were_made(tmp_path):
    import json

    from selfreward.rundir import record_environment

    def row(acc):
        return {"policy/oracle_accuracy_sampled": acc, "h2h/vs_m1_win_rate_sampled": 0.5,
                "judge/pairwise_accuracy": 0.7, "time/sft_s": 100.0, "time/eval_s": 1.5 if acc < 0.7 else None}

    for experiment, accs in (("default", (0.5, 0.6, 0.7)), ("oracle_reward", (0.5, 0.7, 0.8))):
        folder = tmp_path / experiment / "seed0"
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(row(a)) + "\n" for a in accs))
        record_environment(folder, "selfreward")
    script = Path(__file__).parent.parent / "scripts" / "evidence_summary.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    # Stage time: 100 + 1.5 (M1), 100 + 1.5 (M2), 100 (M3, its eval timer None) = 303 s.
    assert "| default | 0 | 0.500 | 0.600 | 0.700 | +20.0 | 0.500 | 0.700 -> 0.700 | -, - | -, - | 303 |" in out
    assert "default stage time: 303-303 s, mean 303 s over 1 runs (start-up not counted)" in out
    assert "oracle_reward: mean gain +30.0 points over 1 seeds, gains on 1" in out
    (made_on,) = [line for line in out.splitlines() if line.startswith("made on: ")]
    assert made_on.endswith("(2 runs)") and "kernels" in made_on and "torch " in made_on
    assert "more than one environment" not in out
