"""Seed and held-out data: the files every run reads, and their checks.

A run's ``data/`` folder holds four JSON Lines files (the contract, whatever their source):

- ``ift.jsonl``: ``{"prompt", "response"}``: instruction fine-tuning pairs. Rows with a
  ``"kind"`` (``"self_instruct"``, ``"meta_judge"``) are demonstrations of the self-instruction or
  meta-judge prompt (the built-in world teaches its tiny model those skills); they are trained on
  but never used as seed prompts.
- ``eft.jsonl``: ``{"prompt", "response", "judgment"}``: judge training; the judgment ends with
  ``Score: N``. The judge template is filled with prompt and response at training time.
- ``eval_prompts.jsonl``: ``{"prompt"}``, optionally ``"answer"``: held-out prompts.
- ``judge_eval.jsonl``: ``{"prompt", "responses": [...], "scores": [...]}`` (higher is better) or
  ``"ranks": [...]`` (0 is best, as human rankings are given): the held-out judge set.

One module per source writes them: ``builtin`` (the built-in world, with an oracle and its own
base model), ``files`` (copies a user's folder in, so that a run does not change when the source
files do) and ``oasst`` (Open Assistant, the paper's seed data; its ``eft.jsonl`` comes from the
judgments of an SFT-on-IFT model, the loop's ``eft`` stage). The rest of the package asks this
module, never a source: :func:`prepare_data`, :func:`make_oracle`, :func:`base_model`,
:func:`check_source`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from selfreward.rundir import SelfRewardError, read_jsonl_numbered

from selfreward.data.builtin import OWN_PROMPTS as EFT_OWN_PROMPTS
from selfreward.data.builtin import WorldConfig  # the schema of data.world (selfreward/config.py)

FILES = ("ift", "eft", "eval_prompts", "judge_eval")
_REQUIRED = {
    "ift": ("prompt", "response"),
    "eft": ("prompt", "response", "judgment"),
    "eval_prompts": ("prompt",),
    "judge_eval": ("prompt", "responses"),
}


@dataclass
class SeedData:
    ift: list[dict]
    eft: list[dict]
    eval_prompts: list[dict]
    judge_eval: list[dict]

    @property
    def seed_prompts(self) -> list[str]:
        """The IFT prompts that self-instruction draws its demonstrations from."""
        return [r["prompt"] for r in self.ift if r.get("kind") is None]


@dataclass(frozen=True)
class Oracle:
    """Ground truth for measurement, from a data source: is an answer correct, (if known) its
    graded quality, and (if known) whether a prompt is a real task. The loop never learns from
    it; it measures with it, and with ``reward=oracle`` a control scores with ``score``."""

    correct: Callable[[str, str], bool]
    score: Callable[[str, str], float | None] | None = None
    valid: Callable[[str], bool] | None = None


# The sources, one module each. Every module has ``prepare(cfg, data_dir) -> counts`` (writes the
# files of the contract) and ``check(cfg)`` (its config, at start); the built-in world also has
# ``oracle()`` and ``base_model(cfg, data_dir, out_dir, seed)`` (a base model and tokenizer made
# for its data). Nothing outside this package imports a source or branches on data.source.
SOURCES = {"builtin": "selfreward.data.builtin", "files": "selfreward.data.files", "oasst": "selfreward.data.oasst"}


def source(cfg) -> ModuleType:
    """The module of the configured source (``data.source``)."""
    return importlib.import_module(SOURCES[cfg.data.source])


def check_source(cfg) -> None:
    """The source's own config checks, and what the rest of the config asks of the source;
    raises :class:`selfreward.config.ConfigError` (called by ``config.validate``)."""
    from selfreward.config import ConfigError

    src = source(cfg)
    if cfg.model.name_or_path == "builtin" and not hasattr(src, "base_model"):
        raise ConfigError(f"invalid config: model.name_or_path='builtin' with data.source={cfg.data.source!r}; "
                          f"allowed: the built-in model only with data=builtin (its tokenizer is built from that "
                          f"world); set model=... to a real model")
    src.check(cfg)


def has_graded_oracle(cfg) -> bool:
    """Whether the configured source has its own oracle with graded scores (``reward=oracle``)."""
    return hasattr(source(cfg), "oracle")


def prepare_data(cfg, data_dir: Path) -> dict:
    """Fill ``data_dir`` from the configured source and check the files; return counts per file.

    A source may give ``eft_groups.jsonl`` (ranked answers) instead of ``eft.jsonl``; the loop's
    ``eft`` stage then makes ``eft.jsonl`` from an SFT model's judgments (the paper's recipe).
    """
    info = source(cfg).prepare(cfg, Path(data_dir))
    names = [n for n in FILES if n != "eft" or (Path(data_dir) / "eft.jsonl").is_file()]
    for name in names:
        check_file(Path(data_dir) / f"{name}.jsonl", name, cfg)
    return info


def make_oracle(cfg, data: SeedData) -> Oracle | None:
    """The source's oracle, exact match on the reference answers of the eval prompts when every
    one has an ``"answer"``, or None."""
    src = source(cfg)
    if hasattr(src, "oracle"):
        return src.oracle()
    answers = {r["prompt"]: r["answer"] for r in data.eval_prompts if "answer" in r}
    if len(answers) < len(data.eval_prompts):
        return None
    return Oracle(lambda prompt, response: response.strip() == str(answers[prompt]).strip())


def base_model(cfg, data_dir: Path, out_dir: Path, seed: int) -> dict:
    """Write the source's own base model and tokenizer (``model=tiny``) into ``out_dir``."""
    return source(cfg).base_model(cfg, Path(data_dir), Path(out_dir), seed)


# Inputs from which the loop's eft stage makes eft.jsonl: ranked answers for an SFT-on-IFT model to
# judge (data=oasst, the paper's recipe), or prompts for it to answer, its answers labelled by the
# world's rubric (the built-in world with data.world.n_eft_own).
EFT_GROUPS = "eft_groups.jsonl"


def eft_stage_input(data_dir: Path) -> str | None:
    """Which input of the eft stage ``data_dir`` holds (:data:`EFT_GROUPS` or
    :data:`EFT_OWN_PROMPTS`), or None when its ``eft.jsonl`` comes with the data."""
    return next((name for name in (EFT_GROUPS, EFT_OWN_PROMPTS) if (Path(data_dir) / name).is_file()), None)


def own_answer_requests(cfg, data_dir: Path) -> tuple[list[str], int]:
    """The prompts of :data:`EFT_OWN_PROMPTS` and how many answers to sample for each."""
    return source(cfg).own_answer_requests(cfg, Path(data_dir))


def eft_with_own_answers(cfg, data_dir: Path, samples: list[tuple[str, list[str]]], seed: int) -> list[dict]:
    """``eft.jsonl``'s rows from an SFT-on-IFT model's ``samples`` ((prompt, answers) pairs) of the
    prompts in :data:`EFT_OWN_PROMPTS`, labelled by the source (the built-in world's rubric)."""
    return source(cfg).eft_with_own_answers(cfg, Path(data_dir), samples, seed)


def eft_from_judgments(*args, **kwargs):
    """The paper's EFT recipe on judged ranked answers (see :mod:`selfreward.data.oasst`)."""
    from selfreward.data.oasst import eft_from_judgments as recipe

    return recipe(*args, **kwargs)


def _parse_score(*args):
    from selfreward.judge import parse_score  # judge imports the engine (torch); only EFT needs it here

    return parse_score(*args)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(numbered: list[tuple[int, dict]], name: str, path: Path, cfg) -> list[dict]:
    """The records of one file, each checked against the contract; errors say ``path:line``."""
    if not numbered:
        raise SelfRewardError(f"{path}: no records (the {name} set must not be empty)")
    for line, row in numbered:
        where = f"{path}:{line}"
        for key in _REQUIRED[name]:
            if key not in row:
                raise SelfRewardError(f"{where}: the record has no {key!r}")
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise SelfRewardError(f"{where}: 'prompt' must be a non-empty string")
        for key in ("response", "judgment"):
            if key in _REQUIRED[name] and not isinstance(row[key], str):
                raise SelfRewardError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")
        if name == "eft" and _parse_score(row["judgment"], cfg.judge.min_score, cfg.judge.max_score,
                                         row["response"]) is None:
            raise SelfRewardError(
                f"{where}: the judgment does not end with a 'Score: N' line, "
                f"N in [{cfg.judge.min_score}, {cfg.judge.max_score}]"
            )
        if name == "judge_eval":
            responses = row["responses"]
            labels = row.get("scores", row.get("ranks"))
            if labels is None:
                raise SelfRewardError(f"{where}: the record has neither 'scores' nor 'ranks'")
            if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
                raise SelfRewardError(f"{where}: 'responses' must be a list of strings")
            if not isinstance(labels, list) or not all(_is_number(x) for x in labels):
                raise SelfRewardError(f"{where}: 'scores' or 'ranks' must be a list of numbers")
            if len(labels) != len(responses) or len(labels) < 2:
                raise SelfRewardError(f"{where}: needs 2+ responses and one label per response")
    return [row for _, row in numbered]


def check_file(path: Path, name: str, cfg) -> list[dict]:
    """Read one file of the contract (``name`` in :data:`FILES`) and check every record; an error
    names ``path`` and the line."""
    return _check(read_jsonl_numbered(path), name, Path(path), cfg)


def load_data(data_dir: Path, cfg) -> SeedData:
    """Read and check the four files, applying the configured size limits."""
    limits = {"ift": cfg.data.max_ift, "eft": cfg.data.max_eft,
              "eval_prompts": cfg.data.max_eval_prompts, "judge_eval": cfg.data.max_judge_eval}
    loaded = {}
    for name in FILES:
        rows = check_file(Path(data_dir) / f"{name}.jsonl", name, cfg)
        loaded[name] = rows[: limits[name]] if limits[name] is not None else rows
    return SeedData(**loaded)


def gold_labels(row: dict) -> list[float]:
    """Gold quality of a judge-eval row's responses, higher is better."""
    if "scores" in row:
        return [float(s) for s in row["scores"]]
    return [-float(r) for r in row["ranks"]]
