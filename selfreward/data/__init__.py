"""Seed and held-out data: the files every run reads, and their checks.

A run's ``data/`` folder holds four JSON Lines files (the contract, whatever their source):

- ``ift.jsonl``: ``{"prompt", "response"}``: instruction fine-tuning pairs. Rows with
  ``"kind": "self_instruct"`` are demonstrations of the self-instruction prompt (the built-in
  world teaches its tiny model that skill); they are trained on but never used as seed prompts.
- ``eft.jsonl``: ``{"prompt", "response", "judgment"}``: judge training; the judgment ends with
  ``Score: N``. The judge template is filled with prompt and response at training time.
- ``eval_prompts.jsonl``: ``{"prompt"}``, optionally ``"answer"``: held-out prompts.
- ``judge_eval.jsonl``: ``{"prompt", "responses": [...], "scores": [...]}`` (higher is better) or
  ``"ranks": [...]`` (0 is best, as human rankings are given): the held-out judge set.

The built-in world writes them; ``data=files`` copies a user's folder in, so that a run does not
change when the source files do; ``data=oasst`` builds them from Open Assistant (the paper's
seed data), its ``eft.jsonl`` from the judgments of an SFT-on-IFT model (the loop's ``eft`` stage).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from selfreward.judge import parse_score
from selfreward.rundir import SelfRewardError, read_jsonl_numbered

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
        return [r["prompt"] for r in self.ift if r.get("kind") != "self_instruct"]


def prepare_data(cfg, data_dir: Path) -> dict:
    """Fill ``data_dir`` from the configured source; return counts per file."""
    source = cfg.data.source
    if source == "builtin":
        from omegaconf import OmegaConf

        from selfreward.data.builtin import WorldConfig, build_world

        world = cfg.data.world
        try:
            build_world(world if isinstance(world, WorldConfig) else OmegaConf.to_object(world), data_dir)
        except ValueError as e:
            raise SelfRewardError(f"data.world: {e}") from None
    elif source == "files":
        if not cfg.data.dir:
            raise SelfRewardError("data.source=files needs data.dir=<folder with ift.jsonl, eft.jsonl, ...>")
        src = Path(cfg.data.dir).expanduser()
        if not src.is_dir():
            raise SelfRewardError(f"data.dir {src} is not a folder")
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if not (src / f"{name}.jsonl").is_file():
                raise SelfRewardError(f"data.dir {src} has no {name}.jsonl")
            # Checked where they are, so that an error names the user's file and line, not the copy.
            _check(read_jsonl_numbered(src / f"{name}.jsonl"), name, src / f"{name}.jsonl", cfg)
        for name in FILES:
            shutil.copyfile(src / f"{name}.jsonl", data_dir / f"{name}.jsonl")
    elif source == "oasst":
        # EFT needs judgments by an SFT model: the loop's "eft" stage writes eft.jsonl later.
        from selfreward.data.oasst import prepare_oasst

        o = cfg.data.oasst
        info = prepare_oasst(o.source, data_dir, n_eval=o.n_eval, n_judge_eval=o.n_judge_eval, lang=o.lang,
                             seed=cfg.seed)
        for name in ("ift", "eval_prompts", "judge_eval"):  # eft.jsonl is checked once the eft stage wrote it
            _check(read_jsonl_numbered(data_dir / f"{name}.jsonl"), name, data_dir / f"{name}.jsonl", cfg)
        return info
    else:
        raise SelfRewardError(f"data.source must be builtin, files or oasst, got {source!r}")
    data = load_data(data_dir, cfg)
    return {name: len(getattr(data, name)) for name in FILES}


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
        if name == "eft" and parse_score(row["judgment"], cfg.judge.min_score, cfg.judge.max_score,
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


def load_data(data_dir: Path, cfg) -> SeedData:
    """Read and check the four files, applying the configured size limits."""
    limits = {"ift": cfg.data.max_ift, "eft": cfg.data.max_eft,
              "eval_prompts": cfg.data.max_eval_prompts, "judge_eval": cfg.data.max_judge_eval}
    loaded = {}
    for name in FILES:
        path = Path(data_dir) / f"{name}.jsonl"
        rows = _check(read_jsonl_numbered(path), name, path, cfg)
        loaded[name] = rows[: limits[name]] if limits[name] is not None else rows
    return SeedData(**loaded)


def gold_labels(row: dict) -> list[float]:
    """Gold quality of a judge-eval row's responses, higher is better."""
    if "scores" in row:
        return [float(s) for s in row["scores"]]
    return [-float(r) for r in row["ranks"]]
