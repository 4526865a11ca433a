"""A control, the upper bound of a perfect judge: the data source's graded oracle scores each
candidate (no model, no judgment text)."""

from __future__ import annotations

from selfreward.rewards import Context, Group, Scored, per_distinct


def score(groups: list[Group], ctx: Context) -> list[list[Scored]]:
    """The oracle's score of each distinct candidate (``None`` where it gives none)."""
    return per_distinct(groups, lambda items: [Scored(ctx.oracle.score(p, r)) for p, r in items])


def check(cfg) -> None:
    """The data source must have a graded oracle (only the built-in world has one)."""
    from selfreward.config import ConfigError
    from selfreward.data import has_graded_oracle

    if not has_graded_oracle(cfg):
        raise ConfigError(f"invalid config: reward=oracle with data.source={cfg.data.source!r}; "
                          f"allowed: reward=oracle needs data=builtin, the only world with a graded oracle")
