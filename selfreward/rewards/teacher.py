"""RLAIF: a separate model (any folder: a larger built-in model trained to judge, or a real one)
judges the policy's candidates with the rubric template and the judge settings (``conf/judge/``)."""

from __future__ import annotations

from selfreward.prompts import load_template
from selfreward.rewards import Context, Group, Scored, per_distinct
from selfreward.rewards.self_judge import judged


def score(groups: list[Group], ctx: Context, model: str, template: str | None = None) -> list[list[Scored]]:
    """Each distinct candidate judged by the model in ``model`` (``judge.repeats`` sampled
    judgments, or the expected score), with ``template`` (default ``judge.template``). The loop
    keeps one engine loaded: the teacher is loaded for this stage and the policy again after."""
    text = load_template(template or ctx.cfg.judge.template)
    return per_distinct(groups, lambda items: judged(ctx.engine(model), text, items, ctx.cfg.judge, seed=ctx.seed,
                                                     desc="teacher judge"))


def check(cfg) -> None:
    """The teacher's folder holds a model and a tokenizer; its template has the two fields."""
    from selfreward.config import check_model_folder, check_template

    check_model_folder("reward.model", cfg.reward.model, cfg.model.trust_remote_code)
    if cfg.reward.get("template") is not None:
        check_template("reward.template", cfg.reward.template, ("prompt", "response"))
