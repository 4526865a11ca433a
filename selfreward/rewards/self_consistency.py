"""Majority vote (self-consistency; ScPO, LMSI): a candidate's score is the share of the prompt's
N samples that give the same answer, for tasks with one canonical answer. No model call."""

from __future__ import annotations

from collections import Counter

from selfreward.rewards import Context, Group, Scored


def normalise(text: str) -> str:
    """The answer with its whitespace runs made single spaces and its ends stripped."""
    return " ".join(text.split())


def score(groups: list[Group], ctx: Context) -> list[list[Scored]]:
    """For each response, the share of its group's responses (itself included, copies counted)
    equal to it after :func:`normalise`; the detail ``votes`` is that count."""
    result = []
    for _, responses in groups:
        votes = Counter(normalise(r) for r in responses)
        result.append([Scored(votes[normalise(r)] / len(responses), details={"votes": votes[normalise(r)]})
                       for r in responses])
    return result
