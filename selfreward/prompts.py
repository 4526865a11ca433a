"""Prompt templates and self-instruction.

Templates are plain text files with ``{name}`` fields. Built-in ones live in
``selfreward/templates/`` and are named without their ``.txt``; anything else is read as a
path, so users can bring their own judge or self-instruction template.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from selfreward.rundir import SelfRewardError

TEMPLATE_DIR = Path(__file__).parent / "templates"

# The built-in chat template, for tokenizers that ship none, lives with the rest of the chat
# format (selfreward/chat.py); imported here for older callers.
from selfreward.chat import DEFAULT_CHAT_TEMPLATE  # noqa: E402,F401


def load_template(name_or_path: str) -> str:
    """Return a template's text: a built-in name (``judge_additive``) or a file path."""
    builtin = TEMPLATE_DIR / f"{name_or_path}.txt"
    path = builtin if builtin.is_file() else Path(name_or_path).expanduser()
    if not path.is_file():
        names = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise SelfRewardError(
            f"template {name_or_path!r} is neither a built-in ({', '.join(names)}) nor a file"
        )
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise SelfRewardError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x})") from None
    except OSError as e:
        raise SelfRewardError(f"{path}: cannot read ({e.strerror})") from None


def fill(template: str, **fields: str) -> str:
    """Fill ``{name}`` fields. Unlike ``str.format`` it leaves other braces in user text alone."""
    missing = [name for name in fields if "{" + name + "}" not in template]
    if missing:
        raise ValueError(f"template has no field(s) {missing}; it must contain {{{missing[0]}}}")
    # Fill in one pass so that a value containing "{response}" is never filled again.
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in fields))
    return pattern.sub(lambda m: fields[m.group(0)[1:-1]], template)


def self_instruct_prompt(template: str, examples: list[str]) -> str:
    """The few-shot prompt that asks a model for one new instruction like ``examples``."""
    return fill(template, examples="\n".join(examples))


def sample_shots(rng: random.Random, pool: list[str], k: int) -> list[str]:
    """Draw ``k`` distinct demonstrations from ``pool`` (all of it when it is smaller)."""
    return rng.sample(pool, min(k, len(pool)))


# --- Self-Instruct style filters -------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts over lower-cased word tokens.

    Written here (an LCS in a dozen lines) rather than pulling in ``rouge-score``, whose
    tokenizer drops digits' context and which adds nltk and absl to the install.
    """
    return _rouge_l_words(_words(a), _words(b))


def _rouge_l_words(x: list[str] | tuple[str, ...], y: list[str] | tuple[str, ...]) -> float:
    if not x or not y:
        return 0.0
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y):
            cur.append(prev[j] + 1 if xi == yj else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def _rouge_l_bound(x: tuple[str, ...], y: tuple[str, ...]) -> float:
    """An upper bound of ROUGE-L F1 = 2 LCS / (|x| + |y|) from the lengths alone: LCS <= the
    shorter length, and <= n - 1 for two different texts of n words each. It lets the filter skip
    the quadratic LCS for most pairs (with the default threshold, every pair that is not identical)."""
    return 1.0 if x and x == y else _rouge_l_length_bound(len(x), len(y))


def _rouge_l_length_bound(n: int, m: int) -> float:
    """:func:`_rouge_l_bound` of two different texts of ``n`` and ``m`` words."""
    if not n or not m:
        return 0.0
    return (n - 1) / n if n == m else 2 * min(n, m) / (n + m)


@dataclass
class FilterReport:
    """How many generated prompts each filter dropped."""

    kept: int = 0
    empty: int = 0
    too_short: int = 0
    too_long: int = 0
    banned_keyword: int = 0
    exact_duplicate: int = 0
    near_duplicate: int = 0


class _Pool:
    """The word tuples of the prompts seen so far, grouped by length, for the near-duplicate test.
    :func:`_rouge_l_bound` depends only on the two lengths (and, for equal lengths, on whether the
    tuples are the same), so the test computes it once per length present instead of once per
    prompt, and runs the LCS only in the groups whose bound passes: the same decisions as comparing
    with every prompt (``tests/test_prompts.py`` checks it against brute force), without a pass
    over the whole pool for every output (about 10 s of the second round's prompts stage with
    6,000 outputs against 7,000 earlier and seed prompts)."""

    def __init__(self, texts: list[str]):
        self.by_length: dict[int, list[tuple[str, ...]]] = {}
        self.tuples: set[tuple[str, ...]] = set()
        for text in texts:
            self.add(tuple(_words(text.strip())))

    def add(self, words: tuple[str, ...]) -> None:
        self.by_length.setdefault(len(words), []).append(words)
        self.tuples.add(words)

    def near_duplicate(self, words: tuple[str, ...], max_rouge_l: float) -> bool:
        """Whether some prompt of the pool has ROUGE-L F1 above ``max_rouge_l`` (< 1) with ``words``."""
        if words and words in self.tuples:
            return True  # ROUGE-L 1.0, and its bound too
        for length, others in self.by_length.items():
            # Any tuple here differs from words (the same one returned above).
            if (_rouge_l_length_bound(len(words), length) > max_rouge_l
                    and any(_rouge_l_words(words, other) > max_rouge_l for other in others)):
                return True
        return False


def filter_prompts(
    candidates: list[str],
    existing: list[str],
    *,
    min_chars: int,
    max_chars: int,
    max_rouge_l: float,
    banned_keywords: list[str] | tuple[str, ...] = (),
) -> tuple[list[str], FilterReport]:
    """Keep the generated prompts that pass Self-Instruct's filters, in order.

    A prompt is dropped when it is empty, outside ``[min_chars, max_chars]``, contains a banned
    keyword, repeats a prompt seen before (seed or kept earlier), or has ROUGE-L above
    ``max_rouge_l`` with any of them (``max_rouge_l >= 1`` turns the near-duplicate test off).
    """
    report = FilterReport()
    seen = {p.strip() for p in existing}
    # Each text's words once (not once per comparison), grouped by length: an output is checked
    # against the whole pool, seed prompts included, without a comparison with each of them.
    pool = _Pool(existing)
    kept: list[str] = []
    banned = [k.lower() for k in banned_keywords]
    for raw in candidates:
        text = raw.strip()
        if not text:
            report.empty += 1
        elif len(text) < min_chars:
            report.too_short += 1
        elif len(text) > max_chars:
            report.too_long += 1
        elif any(k in text.lower() for k in banned):
            report.banned_keyword += 1
        elif text in seen:
            report.exact_duplicate += 1
        elif max_rouge_l < 1 and pool.near_duplicate(words := tuple(_words(text)), max_rouge_l):
            report.near_duplicate += 1
        else:
            kept.append(text)
            seen.add(text)
            pool.add(words if max_rouge_l < 1 else tuple(_words(text)))
            report.kept += 1
    return kept, report
