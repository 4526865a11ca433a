"""The data sources behind one boundary (selfreward/data/): each source writes the same files,
the rest of the package asks the boundary for data, oracle and base model, and never a source."""

import logging
import re
from pathlib import Path

import pytest

import selfreward.loop as loop
from selfreward.rewards import Context
from selfreward.data import FILES, SOURCES, base_model, load_data, make_oracle, prepare_data, source
from selfreward.rundir import read_json, read_jsonl, write_jsonl
from conftest import TINY, compose_config

PACKAGE = Path(__file__).resolve().parent.parent / "selfreward"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "oasst"


def test_nothing_outside_the_data_package_imports_a_source_or_branches_on_it():
    outside = [p for p in PACKAGE.rglob("*.py") if PACKAGE / "data" not in p.parents]
    leaks = []
    for path in outside:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"selfreward\.data\.(builtin|files|oasst)|from selfreward\.data import (builtin|files|oasst)"
                         r"|data\.source\s*[!=]=|\bimport world\b", line):
                leaks.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert leaks == []


def test_every_source_has_the_same_interface():
    for name in SOURCES:
        module = source(compose_config([f"data.source={name}"]))
        assert callable(module.prepare) and callable(module.check), name
    builtin = source(compose_config())
    assert callable(builtin.oracle) and callable(builtin.base_model)


@pytest.mark.parametrize("overrides, has_eft", [
    ([], True),
    (["data=oasst", "model=qwen2_5_0_5b", "training=paper", f"data.oasst.source={FIXTURE}", "data.oasst.n_eval=5",
      "data.oasst.n_judge_eval=1"], False),
])
def test_each_source_writes_the_contract(overrides, has_eft, tmp_path):
    cfg = compose_config([*TINY, *overrides])
    counts = prepare_data(cfg, tmp_path)
    for name in FILES:
        if name == "eft" and not has_eft:
            # Open Assistant leaves EFT to the loop's eft stage: ranked groups to judge instead.
            assert not (tmp_path / "eft.jsonl").exists() and (tmp_path / "eft_groups.jsonl").is_file()
            continue
        assert counts[name] == len(read_jsonl(tmp_path / f"{name}.jsonl")) > 0, name
    # The files source reads back what another source wrote, unchanged.
    if has_eft:
        copy = tmp_path / "copy"
        again = prepare_data(compose_config([*TINY, "data=files", f"data.dir={tmp_path}", "model=qwen2_5_0_5b"]),
                             copy)
        assert again == counts
        assert all((copy / f"{n}.jsonl").read_bytes() == (tmp_path / f"{n}.jsonl").read_bytes() for n in FILES)


def test_the_oracle_and_the_base_model_come_from_the_source(tmp_path):
    cfg = compose_config(TINY)
    prepare_data(cfg, tmp_path / "data")
    data = load_data(tmp_path / "data", cfg)
    oracle = make_oracle(cfg, data)
    assert oracle.correct("sort: 3 1 2", "1 2 3") and not oracle.correct("sort: 3 1 2", "1 3 2")
    assert oracle.score("sort: 3 1 2", "1 2 3") == 5 and oracle.valid("sort: 3 1 2") and not oracle.valid("hello")
    info = base_model(cfg, tmp_path / "data", tmp_path / "m0", seed=0)
    assert info["parameters"] > 0 and (tmp_path / "m0" / "model.safetensors").is_file()
    # A folder of files has no oracle of its own: exact match when every eval prompt has an answer.
    files = compose_config([*TINY, "data=files", f"data.dir={tmp_path / 'data'}", "model=qwen2_5_0_5b"])
    exact = make_oracle(files, data)
    first = data.eval_prompts[0]
    assert exact.correct(first["prompt"], first["answer"]) and exact.score is None and exact.valid is None
    assert make_oracle(files, data.__class__(data.ift, data.eft, [{"prompt": "x"}], data.judge_eval)) is None


def test_the_oracle_control_scores_candidates_with_the_sources_rubric(tmp_path):
    cfg = compose_config([*TINY, "reward=oracle"])
    prepare_data(cfg, tmp_path / "data")
    oracle = make_oracle(cfg, load_data(tmp_path / "data", cfg))
    write_jsonl(tmp_path / "candidates.jsonl", [{"prompt": "sort: 3 1 2", "responses": ["1 2 3", "1 3 2", "1 2 3"]}])
    no_model = lambda *_: pytest.fail("the oracle control needs no model")  # noqa: E731
    info = loop.write_judgments(Context(cfg, 0, policy=no_model, engine=no_model, oracle=oracle), cfg, out=tmp_path)
    rows = read_jsonl(tmp_path / "judgments.jsonl")
    # Hand-checked with the world's rubric: "1 2 3" is right (5); "1 3 2" has the digits, the
    # length and the items, in the wrong order (3).
    assert [r["score"] for r in rows] == [5, 3, 5]
    assert info["distinct_candidates"] == 2 and info["judgments"] == 0 and info["parse_failure_rate"] is None
    # No judge, so no judgment text (the control once wrote a fake "oracle\nScore: N").
    assert all(r["judgments"] == [] and r["scores"] == [] for r in rows)


class _Writer:
    """An engine that writes the same three lines whatever it is asked (self-instruction only)."""

    def generate(self, messages, sampling, *, n=1, seed=0, desc=""):
        # Longer lists than the world draws (max 6 items), so none repeats a seed prompt.
        lines = ["sort: 9 8 7 6 5 4 3", "write a poem please", "unique: 4 4 2 2 1 1 0"]
        return [[lines[i % 3]] for i in range(len(messages))]


def test_prompt_validity_is_measured_by_the_sources_oracle(tmp_path):
    cfg = compose_config([*TINY, "prompts.n_requests=3", "prompts.max_rouge_l=1.0"])
    prepare_data(cfg, tmp_path / "data")
    data = load_data(tmp_path / "data", cfg)
    out = tmp_path / "m2"
    info = loop.write_prompts(_Writer(), data, cfg, seed=0, out=out, earlier=[], oracle=make_oracle(cfg, data))
    assert info["count"] == 3 and info["valid_rate"] == pytest.approx(2 / 3)
    # Without an oracle nothing is measured (and nothing is made up).
    assert "valid_rate" not in loop.write_prompts(_Writer(), data, cfg, seed=0, out=out, earlier=[])
    assert read_json(tmp_path / "data" / "world.json")["counts"]["ift.jsonl"] == len(data.ift)


def test_a_collapsed_self_instruction_is_warned_about(tmp_path, caplog):
    # The writer repeats three lines: 3 kept of 3 requests is fine, 3 of 40 (under a tenth) is not.
    cfg = compose_config([*TINY, "prompts.n_requests=3", "prompts.max_rouge_l=1.0"])
    prepare_data(cfg, tmp_path / "data")
    data = load_data(tmp_path / "data", cfg)
    with caplog.at_level(logging.WARNING, logger="selfreward.loop"):
        loop.write_prompts(_Writer(), data, cfg, seed=0, out=tmp_path / "m2", earlier=[])
        assert "kept only" not in caplog.text
        cfg.prompts.n_requests = 40
        info = loop.write_prompts(_Writer(), data, cfg, seed=0, out=tmp_path / "m2", earlier=[])
    assert info["count"] == 3 and info["exact_duplicate"] == 37
    assert "self-instruction kept only 3 prompts of 40 requests (37 exact duplicates" in caplog.text
