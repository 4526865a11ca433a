"""scripts/judge_diagnostics.py's choice rates, computed by hand on a two-prompt run folder."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "judge_diagnostics.py"


@pytest.fixture(scope="module")
def diagnostics():
    spec = importlib.util.spec_from_file_location("judge_diagnostics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_choice_rates_by_hand(tmp_path, diagnostics):
    # sort: 3 1 2 -> "1 2 3". Candidates: a wrong "1 2 2" first, then the right answer twice;
    # both scored 5 (a tie at the top), "3 1 2" scored 2.
    # evens: 4 1 6 -> "4 6": every candidate scored alike, so the prompt is left out.
    _write(tmp_path, "candidates.jsonl", [
        {"prompt": "sort: 3 1 2", "responses": ["1 2 2", "1 2 3", "3 1 2", "1 2 3"]},
        {"prompt": "evens: 4 1 6", "responses": ["4 6", "4"]},
    ])
    _write(tmp_path, "judgments.jsonl", [
        {"prompt": "sort: 3 1 2", "response": "1 2 2", "score": 5.0},
        {"prompt": "sort: 3 1 2", "response": "1 2 3", "score": 5.0},
        {"prompt": "sort: 3 1 2", "response": "3 1 2", "score": 2.0},
        {"prompt": "evens: 4 1 6", "response": "4 6", "score": 3.0},
        {"prompt": "evens: 4 1 6", "response": "4", "score": 3.0},
    ])
    first = diagnostics.choice_rates(tmp_path)
    assert first["prompts"] == 1
    assert first["judge's top-scored candidate"] == 0.0  # the first of the tied answers is wrong
    assert first["a random sample"] == 0.5 and first["the most frequent candidate"] == 1.0
    assert first["any candidate correct"] == 1.0
    frequent = diagnostics.choice_rates(tmp_path, "frequent")
    assert frequent["judge's top-scored candidate"] == 1.0  # the tied answer sampled twice
