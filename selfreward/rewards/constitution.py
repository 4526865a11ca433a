"""Constitutional AI style judging: the judge prompt lists written principles (``principles`` in
the config file), the judge names the ones a response breaks, then scores it. The judge is M_t
or, with ``model``, a separate model (as in RLAIF, where a stronger model judges)."""

from __future__ import annotations

import re

from selfreward.prompts import fill, load_template
from selfreward.rewards import Context, Group, Scored, per_distinct
from selfreward.rewards.self_judge import judged

_BROKEN = re.compile(r"^[ \t*_]*Broken:[ \t*_]*(.*)$", re.MULTILINE)


def judge_template(principles: list[str], template: str, min_score: int, max_score: int) -> str:
    """The judge template with the principles numbered from 1, one a line, and the score range
    filled in; ``{prompt}`` and ``{response}`` are left for each candidate."""
    numbered = "\n".join(f"{k}. {p}" for k, p in enumerate(principles, 1))
    return fill(load_template(template), principles=numbered, min_score=str(min_score), max_score=str(max_score))


def broken_principles(judgment: str, count: int) -> list[int] | None:
    """The principle numbers on the judgment's last ``Broken:`` line (``[]`` for ``none``);
    ``None`` when there is no such line or it names anything but numbers 1..count."""
    lines = _BROKEN.findall(judgment)
    if not lines:
        return None
    text = lines[-1].strip().rstrip(".").strip()
    if text.lower() == "none":
        return []
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() and 1 <= int(p) <= count for p in parts):
        return None
    return sorted({int(p) for p in parts})


def score(groups: list[Group], ctx: Context, principles: list[str], model: str | None = None,
          template: str = "judge_constitution") -> list[list[Scored]]:
    """Each distinct candidate judged with the constitution (the judge settings of ``conf/judge/``
    for repeats, sampling and score range); the score is read from ``Score: N`` as for the rubric,
    and the detail ``broken`` holds each judgment's broken principles (``None``: not named)."""
    j = ctx.cfg.judge
    text = judge_template(list(principles), template, j.min_score, j.max_score)

    def score_items(items):
        engine = ctx.engine(model) if model else ctx.policy()
        result = judged(engine, text, items, j, seed=ctx.seed, desc="constitution judge")
        for s in result:
            s.details["broken"] = [broken_principles(t, len(principles)) for t in s.judgments]
        return result

    return per_distinct(groups, score_items)


def check(cfg) -> None:
    """At least one principle, each a non-empty line; the template has its five fields; the
    judge's model folder (if any) holds a model."""
    from selfreward.config import ConfigError, check_model_folder, check_template

    principles = cfg.reward.principles
    if not principles or not all(isinstance(p, str) and p.strip() and "\n" not in p for p in principles):
        raise ConfigError(f"invalid config: reward.principles={list(principles or [])!r}; allowed: a list of "
                          f"one or more principles, each one non-empty line")
    check_template("reward.template", cfg.reward.template,
                   ("principles", "min_score", "max_score", "prompt", "response"))
    if cfg.reward.model:
        check_model_folder("reward.model", cfg.reward.model, cfg.model.trust_remote_code)
