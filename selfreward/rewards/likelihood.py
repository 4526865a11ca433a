"""Sharpening's self-reward (Huang et al. 2024): the current model's log-likelihood of the
candidate, ``log pi(y|x)``, optionally per token. No judge prompt, no judgment text."""

from __future__ import annotations

from selfreward.chat import end_of_turn_id
from selfreward.rewards import Context, Group, Scored, per_distinct


def score(groups: list[Group], ctx: Context, length_normalised: bool = False) -> list[list[Scored]]:
    """``log pi(y + end of turn | x)`` under M_t for each distinct candidate ``y``: the end-of-turn
    token is counted so that a cut-off prefix of an answer is not more likely than the answer.
    ``length_normalised``: divided by the number of tokens (end of turn included). The detail
    ``logprob`` and ``tokens`` are written beside the score."""
    engine = ctx.policy()
    tokenizer = engine.tokenizer  # the HF engine's; the token count is not part of the Engine protocol
    end = tokenizer.decode([end_of_turn_id(tokenizer)])

    def score_items(items: list[tuple[str, str]]) -> list[Scored]:
        by_prompt: dict[str, list[int]] = {}
        for i, (prompt, _) in enumerate(items):
            by_prompt.setdefault(prompt, []).append(i)
        result: list[Scored | None] = [None] * len(items)
        for prompt, indices in by_prompt.items():
            texts = [items[i][1] + end for i in indices]
            # One call per prompt: its candidates are continuations of the same (empty) answer prefix.
            logprobs = engine.continuation_logprobs([prompt], [""], texts)[0]
            for i, text, logprob in zip(indices, texts, logprobs):
                tokens = len(tokenizer.encode(text, add_special_tokens=False))
                value = logprob / tokens if length_normalised else logprob
                result[i] = Scored(value, details={"logprob": logprob, "tokens": tokens})
        return result

    return per_distinct(groups, score_items)


def check(cfg) -> None:
    """``length_normalised`` is true or false."""
    from selfreward.config import ConfigError

    value = cfg.reward.length_normalised
    if not isinstance(value, bool):
        raise ConfigError(f"invalid config: reward.length_normalised={value!r}; allowed: true or false")
