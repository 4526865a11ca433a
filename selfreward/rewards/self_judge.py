"""The method's reward: the current model M_t judges its own candidates with the judge settings
(``conf/judge/``: rubric template, sampled judgments averaged or the expected score)."""

from __future__ import annotations

from selfreward.judge import judge
from selfreward.prompts import load_template
from selfreward.rewards import Context, Group, Scored, per_distinct


def judged(engine, template: str, items: list[tuple[str, str]], judge_cfg, *, seed: int, desc: str) -> list[Scored]:
    """:func:`selfreward.judge.judge`'s records as :class:`Scored` (shared by every source that
    asks a model to judge with a template)."""
    records = judge(engine, template, items, judge_cfg, seed=seed, desc=desc)
    return [Scored(r["score"], r["judgments"], r["scores"],
                   {k: v for k, v in r.items() if k not in ("score", "judgments", "scores")}) for r in records]


def score(groups: list[Group], ctx: Context) -> list[list[Scored]]:
    """Each distinct candidate judged by M_t (``judge.repeats`` sampled judgments, or one in
    ``judge.mode=expected``)."""
    template = load_template(ctx.cfg.judge.template)
    return per_distinct(groups, lambda items: judged(ctx.policy(), template, items, ctx.cfg.judge, seed=ctx.seed,
                                                     desc="self-judge"))
