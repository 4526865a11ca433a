"""Tests for the built-in world: oracle, data files, tokenizer and base model."""

from __future__ import annotations

import collections
import json
import random

import pytest
import torch

from selfreward.prompts import DEFAULT_CHAT_TEMPLATE, fill, load_template
from selfreward.rundir import read_jsonl
from selfreward.data.builtin import (
    CHECKS,
    JUDGE_TEMPLATE,
    WorldConfig,
    answer,
    build_base_model,
    build_tokenizer,
    fixed_phrases,
    trace_phrases,
    _world_prompts,
    build_world,
    extra_judge_eval,
    is_correct,
    judgment_text,
    verification_trace,
    oracle_score,
    own_eft_rows,
    parse_prompt,
    rubric_checks,
    sample_response,
    tokenizer_corpus,
    write_base_model,
)

SMALL = dict(n_ift=50, n_self_instruct=10, n_eft=60, n_eval_prompts=20, n_judge_eval=10)
FILES = ("ift.jsonl", "eft.jsonl", "eval_prompts.jsonl", "judge_eval.jsonl", "world.json")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(**SMALL), out)
    return out


@pytest.fixture(scope="module")
def tokenizer(world_dir):
    return build_tokenizer(tokenizer_corpus(world_dir))


# --- Oracle -----------------------------------------------------------------------------------


def test_answers():
    assert answer("sort: 3 1 4 1") == "1 1 3 4"
    assert answer("reverse: 3 1 4 1") == "1 4 1 3"
    assert answer("unique: 3 1 4 1") == "3 1 4"
    assert answer("evens: 3 1 4 1") == "4"
    assert parse_prompt("  sort: 3 1 2 ") == ("sort", ["3", "1", "2"])


@pytest.mark.parametrize(
    "prompt",
    ["", "sort:", "sort 3 1 2", "shuffle: 1 2", "sort: 1 a 2", "sort: 12 3", "Sort: 1 2",
     "evens: 1 3 5"],  # the last has an empty answer
)
def test_invalid_prompts(prompt):
    assert parse_prompt(prompt) is None
    assert answer(prompt) is None
    assert rubric_checks(prompt, "1 2 3") is None
    assert oracle_score(prompt, "1 2 3") is None
    assert not is_correct(prompt, "1 2 3")
    with pytest.raises(ValueError):
        sample_response(random.Random(0), prompt)


@pytest.mark.parametrize(
    "prompt, response, passed",
    [
        # answer 1 2 3, exact.
        ("sort: 3 1 2", "1 2 3", CHECKS),
        ("sort: 3 1 2", " 1 2 3\n", CHECKS),  # surrounding whitespace is stripped
        # answer 1 2 3 vs 1 3 2: same digits, but 3 > 2 is not ascending.
        ("sort: 3 1 2", "1 3 2", ("digits", "length", "items")),
        # ascending with the right length, but a 2 where the input has a 3.
        ("sort: 3 1 2", "1 2 2", ("digits", "length", "order")),
        # the input copied: right digits, but its read-backwards order 2 1 3 is not in the input.
        ("reverse: 3 1 2", "3 1 2", ("digits", "length", "items")),
        # answer 2 1 3; 1 2 3 read backwards is 3 2 1, a subsequence of the input.
        ("reverse: 3 1 2", "1 2 3", ("digits", "length", "items")),
        ("reverse: 3 1 2", "1 3", ("digits", "order")),  # 3 1 is in the input, in order
        # answer 3 1 2 vs 3 1: no repeats, but a digit short.
        ("unique: 3 1 3 2", "3 1", ("digits", "order")),
        # answer 3 1 2 vs 1 2 3: the same set, no repeats, not in first-appearance order.
        ("unique: 3 1 3 2", "1 2 3", ("digits", "length", "items", "order")),
        ("unique: 3 1 3 2", "3 1 3", ("digits", "length")),  # 3 repeated
        # answer 2 4 vs 2 4 6: all even, one too many.
        ("evens: 1 2 3 4", "2 4 6", ("digits", "order")),
        ("evens: 1 2 3 4", "4 2", ("digits", "length", "items", "order")),
        ("evens: 1 2 3 4", "2 3", ("digits", "length")),
        # answer 1 2 3 vs 9 9 9: right length, ascending (equal digits), wrong digits.
        ("sort: 3 1 2", "9 9 9", ("digits", "length", "order")),
        # a single digit is trivially ascending.
        ("sort: 3 1 2", "5", ("digits", "order")),
        ("sort: 3 1 2", "1  2 3", ()),  # double space
        ("sort: 3 1 2", "12 3", ()),
        ("sort: 3 1 2", "1, 2, 3", ()),
        ("sort: 3 1 2", "sort", ()),
        ("sort: 3 1 2", "", ()),
    ],
)
def test_rubric_hand_computed(prompt, response, passed):
    checks = rubric_checks(prompt, response)
    assert list(checks) == list(CHECKS)
    assert checks == {name: name in passed for name in CHECKS}
    assert oracle_score(prompt, response) == len(passed)
    assert is_correct(prompt, response) == ("exact" in passed)


def test_judgment_text():
    checks = {"digits": True, "length": False, "items": False, "order": True, "exact": False}
    assert judgment_text(checks) == "digits yes, length no, items no, order yes, exact no\nScore: 2"
    assert judgment_text(rubric_checks("sort: 3 1 2", "1 3 2")) == (
        "digits yes, length yes, items yes, order no, exact no\nScore: 3"
    )
    # The judgment never contains the answer: the judge checks, it does not re-solve.
    assert "1 2 3" not in judgment_text(rubric_checks("sort: 3 1 2", "1 3 2"))


def test_verification_trace():
    # A replaced digit (3 is not in the input) is "out"; the second 2 the answer needs is "missing".
    assert verification_trace("sort: 4 2 2 7", "2 3 4 7") == (
        "response 2 in, 3 out, 4 in, 7 in\ninput 4 kept, 2 kept, 2 missing, 7 kept")
    # Copies are counted: a third 2 is "extra"; for unique any repeat is, and the input's own
    # repeats are "repeat" (the answer drops them).
    assert verification_trace("sort: 2 7 2", "2 2 2 7") == "response 2 in, 2 in, 2 extra, 7 in\ninput 2 kept, 7 kept, 2 kept"
    assert verification_trace("unique: 5 1 5", "5 5") == "response 5 in, 5 extra\ninput 5 kept, 1 missing, 5 repeat"
    assert verification_trace("unique: 5 1 5", "5 1") == "response 5 in, 1 in\ninput 5 kept, 1 kept, 5 repeat"
    # evens: odd digits are "odd" on both sides, whether the response holds them or not.
    assert verification_trace("evens: 1 2 4 2", "1 2 4") == (
        "response 1 odd, 2 in, 4 in\ninput 1 odd, 2 kept, 4 kept, 2 missing")
    assert verification_trace("evens: 1 2", "two") == "response none"
    assert verification_trace("shuffle: 1 2", "1 2") is None
    checks = rubric_checks("sort: 4 2 2 7", "2 3 4 7")
    trace = verification_trace("sort: 4 2 2 7", "2 3 4 7")
    assert judgment_text(checks, trace) == trace + "\n" + judgment_text(checks)


def test_a_clean_trace_is_the_items_check():
    # On every response of the world, the response line has no out/extra/odd and the input line no
    # missing exactly when the response holds the answer's digits: the items check is a set of lookups.
    rng = random.Random(0)
    for task in ("sort", "unique", "evens"):
        for _ in range(400):
            items = [rng.choice("0123456789") for _ in range(rng.randint(3, 6))]
            prompt = f"{task}: {' '.join(items)}"
            if parse_prompt(prompt) is None:
                continue
            response = sample_response(rng, prompt)
            trace = verification_trace(prompt, response)
            said, kept = (trace.split("\n") + [""])[:2]
            clean = said != "response none" and not any(f" {tag}" in said for tag in ("out", "extra", "odd")) \
                and " missing" not in kept
            assert clean == rubric_checks(prompt, response)["items"], (prompt, response, trace)


def test_judge_trace_world(tmp_path, world_dir):
    build_world(WorldConfig(**SMALL, judge_trace=True), tmp_path)
    rows = read_jsonl(tmp_path / "eft.jsonl")
    for r in rows:
        trace = verification_trace(r["prompt"], r["response"])
        assert r["judgment"] == judgment_text(rubric_checks(r["prompt"], r["response"]), trace)
    # Only the judgments change: the same prompts and responses as the world without the trace.
    plain = read_jsonl(world_dir / "eft.jsonl")
    assert [(r["prompt"], r["response"]) for r in rows] == [(r["prompt"], r["response"]) for r in plain]
    assert (tmp_path / "ift.jsonl").read_bytes() == (world_dir / "ift.jsonl").read_bytes()


def test_own_eft_rows_label_the_models_answers_half_right():
    samples = [("sort: 3 1 2", ["1 2 3", "1 2 3", "1 3 2", " 1 2 3 ", "", "1 2\nScore: 5"]),
               ("evens: 4 1 2", ["4 2", "2 4", "4", "4 2"]),
               ("shuffle: 1 2", ["1 2"])]  # not a task of the world: no label, no row
    rows = own_eft_rows(samples, 4, seed=0)
    # Distinct single-line answers only: right ones are "1 2 3" and "4 2"; wrong "1 3 2", "2 4", "4".
    right = [r for r in rows if is_correct(r["prompt"], r["response"])]
    assert len(rows) == 4 and len(right) == 2
    assert {(r["prompt"], r["response"]) for r in right} == {("sort: 3 1 2", "1 2 3"), ("evens: 4 1 2", "4 2")}
    for r in rows:
        checks = rubric_checks(r["prompt"], r["response"])
        assert r["judgment"] == judgment_text(checks) and r["score"] == sum(checks.values()) and r["kind"] == "own"
    assert [r["score"] for r in rows if r["response"] == "1 3 2"] in ([], [3])  # order and exact fail
    # Too few right answers: the wrong ones fill the rest, never a repeat.
    rows = own_eft_rows(samples, 5, seed=0)
    assert len(rows) == 5 and len({(r["prompt"], r["response"]) for r in rows}) == 5
    assert own_eft_rows(samples, 9, seed=0) == own_eft_rows(samples, 9, seed=0) and len(own_eft_rows(samples, 9, seed=0)) == 5
    traced = own_eft_rows(samples, 2, seed=1, trace=True)
    assert all(r["judgment"].startswith(verification_trace(r["prompt"], r["response"]) + "\n") for r in traced)


def test_a_world_with_own_answer_prompts(tmp_path, world_dir):
    info = build_world(WorldConfig(**SMALL, n_eft_own=25), tmp_path)
    # The synthetic judgments wait in eft_seed.jsonl for the eft stage, which writes eft.jsonl.
    assert not (tmp_path / "eft.jsonl").exists()
    assert (tmp_path / "eft_seed.jsonl").read_bytes() == (world_dir / "eft.jsonl").read_bytes()
    for name in ("ift.jsonl", "eval_prompts.jsonl", "judge_eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (world_dir / name).read_bytes()
    own = [r["prompt"] for r in read_jsonl(tmp_path / "eft_own_prompts.jsonl")]
    assert len(own) == len(set(own)) == 25 == info["counts"]["eft_own_prompts.jsonl"]
    assert all(parse_prompt(p) for p in own)
    used = {r["prompt"] for name in ("ift.jsonl", "eft_seed.jsonl", "eval_prompts.jsonl", "judge_eval.jsonl")
            for r in read_jsonl(tmp_path / name)}
    assert not used & set(own)
    # The tokenizer learns from the same texts as the world without them.
    assert tokenizer_corpus(tmp_path) == tokenizer_corpus(world_dir)
    with pytest.raises(ValueError, match="eft_own_samples must be at least 1"):
        WorldConfig(eft_own_samples=0)
    with pytest.raises(ValueError, match="n_eft_own must be at least 0"):
        WorldConfig(n_eft_own=-1)


def test_judge_template_lists_the_checks():
    template = load_template(JUDGE_TEMPLATE)
    assert ", ".join(CHECKS) in template
    assert "{prompt}" in template and "{response}" in template


def test_sample_response_spreads_scores():
    rng = random.Random(0)
    prompts = ["sort: 5 2 8 2 1", "reverse: 1 2 3 4", "unique: 7 7 3 9 3", "evens: 2 5 4 6 8"]
    scores = collections.Counter()
    for prompt in prompts:
        for _ in range(300):
            response = sample_response(rng, prompt)
            assert response.strip()
            scores[oracle_score(prompt, response)] += 1
    assert set(scores) == set(range(6))
    assert min(scores.values()) > 0.05 * sum(scores.values())


# --- Config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(tasks=["sort", "shuffle"]), "tasks"),
        (dict(tasks=[]), "tasks"),
        (dict(min_items=0), "min_items"),
        (dict(min_items=4, max_items=3), "max_items"),
        (dict(n_ift=-1), "n_ift"),
        (dict(n_eft=-1), "n_eft"),
        (dict(n_self_instruct=-1), "n_self_instruct"),
        (dict(n_eval_prompts=-1), "n_eval_prompts"),
        (dict(n_judge_eval=-1), "n_judge_eval"),
        (dict(self_instruct_shots=0), "self_instruct_shots"),
        (dict(judge_eval_responses=1), "judge_eval_responses"),
        (dict(ift_task_weights=[1, 2]), "ift_task_weights"),
        (dict(ift_task_weights=[1, -1, 1]), "ift_task_weights"),
        (dict(ift_task_weights=[0, 0, 0]), "ift_task_weights"),
    ],
)
def test_config_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        WorldConfig(**kwargs)


def test_prompt_space_too_small(tmp_path):
    # "sort" with one item has 10 distinct prompts; these sets need 11.
    cfg = WorldConfig(tasks=["sort"], ift_task_weights=[], min_items=1, max_items=1, n_ift=5, n_self_instruct=0,
                      n_eft=2, n_eval_prompts=2, n_judge_eval=2)
    with pytest.raises(ValueError, match="distinct prompts"):
        build_world(cfg, tmp_path)


def test_small_space_can_be_used_up(tmp_path):
    cfg = WorldConfig(tasks=["sort"], ift_task_weights=[], min_items=1, max_items=1, n_ift=4, n_self_instruct=0,
                      n_eft=2, n_eval_prompts=2, n_judge_eval=2)
    build_world(cfg, tmp_path)
    prompts = [r["prompt"] for name in ("ift.jsonl", "eval_prompts.jsonl", "judge_eval.jsonl")
               for r in read_jsonl(tmp_path / name)]
    prompts += {r["prompt"] for r in read_jsonl(tmp_path / "eft.jsonl")}
    assert len(set(prompts)) == len(prompts) <= 10


# --- Data files -------------------------------------------------------------------------------


def test_build_world_files(world_dir):
    info = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    assert info["config"] == {**WorldConfig().__dict__, **SMALL}
    counts = {"ift.jsonl": 60, "eft.jsonl": 60, "eval_prompts.jsonl": 20, "judge_eval.jsonl": 10}
    assert info["counts"] == counts
    for name, n in counts.items():
        assert len(read_jsonl(world_dir / name)) == n
    assert sorted(p.name for p in world_dir.iterdir()) == sorted(FILES)  # no .tmp left


def test_determinism(tmp_path, world_dir):
    build_world(WorldConfig(**SMALL), tmp_path / "same")
    build_world(WorldConfig(**SMALL, seed=1), tmp_path / "other")
    for name in FILES:
        assert (tmp_path / "same" / name).read_bytes() == (world_dir / name).read_bytes()
        if name != "world.json":
            assert (tmp_path / "other" / name).read_bytes() != (world_dir / name).read_bytes()


def test_ift_task_weights(tmp_path):
    """Weights set the IFT task mix only; held-out and EFT prompts stay as the uniform world's."""
    base = dict(SMALL, n_ift=600, n_eft=30, n_self_instruct=0, n_eval_prompts=300)
    build_world(WorldConfig(**base, ift_task_weights=[]), tmp_path / "uniform")
    build_world(WorldConfig(**base, ift_task_weights=[1, 4, 0]), tmp_path / "weighted")

    def tasks(name, folder):
        return collections.Counter(parse_prompt(r["prompt"])[0] for r in read_jsonl(tmp_path / folder / name))

    weighted, uniform = tasks("ift.jsonl", "weighted"), tasks("ift.jsonl", "uniform")
    assert weighted["evens"] == 0 and 430 < weighted["unique"] < 530  # 480 expected
    assert min(uniform.values()) > 150  # about 200 each
    for name in ("eval_prompts.jsonl", "judge_eval.jsonl"):  # drawn before the IFT prompts
        assert (tmp_path / "weighted" / name).read_bytes() == (tmp_path / "uniform" / name).read_bytes()
    eval_tasks = tasks("eval_prompts.jsonl", "weighted")
    assert min(eval_tasks.values()) > 70  # 100 each expected: uniform
    everything = [r["prompt"] for name in ("ift.jsonl", "eval_prompts.jsonl", "judge_eval.jsonl")
                  for r in read_jsonl(tmp_path / "weighted" / name)]
    assert len(set(everything)) == len(everything)  # still disjoint


def test_ift_and_self_instruct(world_dir):
    rows = read_jsonl(world_dir / "ift.jsonl")
    tasks = [r for r in rows if parse_prompt(r["prompt"])]
    demos = [r for r in rows if not parse_prompt(r["prompt"])]
    assert len(tasks) == SMALL["n_ift"] and len(demos) == SMALL["n_self_instruct"]
    assert all(is_correct(r["prompt"], r["response"]) for r in tasks)
    header = load_template("self_instruct_small").split("\n")[0]
    task_prompts = {r["prompt"] for r in tasks}
    for r in demos:
        first, *shots = r["prompt"].split("\n")
        assert first == header
        assert len(shots) == 4 and set(shots) <= task_prompts
        assert parse_prompt(r["response"]) and r["response"] not in task_prompts


def test_held_out_prompts_are_disjoint(world_dir):
    ift = read_jsonl(world_dir / "ift.jsonl")
    sets = {
        "ift": {r["prompt"] for r in ift if parse_prompt(r["prompt"])},
        "self_instruct": {r["response"] for r in ift if not parse_prompt(r["prompt"])},
        "eft": {r["prompt"] for r in read_jsonl(world_dir / "eft.jsonl")},
        "eval": {r["prompt"] for r in read_jsonl(world_dir / "eval_prompts.jsonl")},
        "judge": {r["prompt"] for r in read_jsonl(world_dir / "judge_eval.jsonl")},
    }
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sets[a] & sets[b], (a, b)
    # Self-instruction prompts quote only IFT prompts as shots.
    held_out = sets["eval"] | sets["judge"]
    assert not any(p in r["prompt"] for r in ift for p in held_out)


def test_extra_judge_eval_rows_are_held_out(tmp_path):
    cfg = WorldConfig(**SMALL, n_eft_own=25)
    build_world(cfg, tmp_path)
    world = set().union(*_world_prompts(cfg)[0])
    ift = read_jsonl(tmp_path / "ift.jsonl")
    # The sets it is disjoint from are the world files' own prompts.
    for name in ("eval_prompts.jsonl", "judge_eval.jsonl", "eft_own_prompts.jsonl"):
        assert {r["prompt"] for r in read_jsonl(tmp_path / name)} <= world, name
    assert {r["prompt"] for r in ift if parse_prompt(r["prompt"])} <= world
    assert {r["response"] for r in ift if not parse_prompt(r["prompt"])} <= world
    rows = extra_judge_eval(cfg, 30)
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == 30 and not set(prompts) & world
    for r in rows:
        assert len(set(r["responses"])) == cfg.judge_eval_responses
        assert r["scores"] == [oracle_score(r["prompt"], x) for x in r["responses"]]
        assert len(set(r["scores"])) >= 2
    # Deterministic, and a smaller set is the larger's first rows; a world of another seed differs.
    assert extra_judge_eval(cfg, 30) == rows
    assert extra_judge_eval(cfg, 10) == rows[:10]
    assert extra_judge_eval(WorldConfig(**SMALL, n_eft_own=25, seed=1), 10) != rows[:10]
    with pytest.raises(ValueError, match="at least 1"):
        extra_judge_eval(cfg, 0)


def test_eval_prompts(world_dir):
    for r in read_jsonl(world_dir / "eval_prompts.jsonl"):
        assert r["answer"] == answer(r["prompt"]) and r["answer"]
        assert 3 <= len(parse_prompt(r["prompt"])[1]) <= 6


def test_eft_balanced_and_consistent(world_dir):
    rows = read_jsonl(world_dir / "eft.jsonl")
    for r in rows:
        assert r["score"] == oracle_score(r["prompt"], r["response"])
        assert r["judgment"] == judgment_text(rubric_checks(r["prompt"], r["response"]))
        assert r["response"].strip()
    counts = collections.Counter(r["score"] for r in rows)
    assert set(counts) == set(range(6))
    assert max(counts.values()) <= 2 * min(counts.values())
    assert len({(r["prompt"], r["response"]) for r in rows}) == len(rows)


def test_judge_eval(world_dir):
    for r in read_jsonl(world_dir / "judge_eval.jsonl"):
        assert len(r["responses"]) == 4 == len(set(r["responses"]))
        assert r["scores"] == [oracle_score(r["prompt"], x) for x in r["responses"]]
        assert len(set(r["scores"])) >= 2


# --- Tokenizer and base model -----------------------------------------------------------------


def test_tokenizer_round_trip(tokenizer, world_dir):
    texts = tokenizer_corpus(world_dir)
    judge = fill(load_template(JUDGE_TEMPLATE), prompt="sort: 3 1 4", response="?")
    texts += [
        judge,
        tokenizer.apply_chat_template(
            [{"role": "user", "content": judge}, {"role": "assistant", "content": "1 3 4"}],
            tokenize=False,
        ),
        "line one\n\nline two  with  spaces\t?",
    ]
    for text in texts:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_tokenizer_properties(tokenizer):
    assert len(tokenizer(" 3 1 4")["input_ids"]) == 3
    assert len(tokenizer(" digits")["input_ids"]) == 1
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>", "<eos>", "<unk>"
    )
    assert len(tokenizer) <= 512
    # EOS ends an assistant turn as a single special token.
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "sort: 2 1"}, {"role": "assistant", "content": "1 2"}],
        tokenize=False,
    )
    assert rendered == "User: sort: 2 1\nAssistant:\n1 2<eos>"  # nothing is trained after EOS
    assert tokenizer.eos_token_id in tokenizer(rendered)["input_ids"]


def test_phrase_tokens_read_the_judge_turns_fixed_text_as_single_tokens(tokenizer, world_dir, tmp_path):
    from transformers import AutoTokenizer

    phrases = fixed_phrases(world_dir)
    assert "\nScore: " in phrases and "digits yes, " in phrases and "exact no" in phrases
    assert any(p.startswith("User: Judge the response") and p.endswith(".\nUser: ") for p in phrases)
    compact = build_tokenizer(tokenizer_corpus(world_dir), phrases=phrases)
    assert len(compact) == len(tokenizer) + len(phrases)
    checks = rubric_checks("sort: 4 2 2 7", "2 3 4 7")
    assert checks == {"digits": True, "length": True, "items": False, "order": True, "exact": False}
    judgment = judgment_text(checks, verification_trace("sort: 4 2 2 7", "2 3 4 7"))
    turn = [{"role": "user", "content": fill(load_template(JUDGE_TEMPLATE), prompt="sort: 4 2 2 7", response="2 3 4 7")},
            {"role": "assistant", "content": judgment}]
    text = tokenizer.apply_chat_template(turn, tokenize=False)
    ids = compact(text)["input_ids"]
    assert compact.decode(ids) == text  # the same text, read differently
    pieces = [compact.decode([i]) for i in ids]
    # The rubric with both turn starts is one token, so are the markup, each verdict and "Score: ".
    rubric = next(p for p in phrases if p.startswith("User: Judge the response"))
    assert pieces[0] == rubric and pieces[1] == "sort"
    assert pieces[-8:] == ["digits yes, ", "length yes, ", "items no, ", "order yes, ", "exact no", "\nScore: ", "3",
                           "<eos>"]
    assert len(ids) < 0.7 * len(tokenizer(text)["input_ids"])  # 80 against 133 in this small world
    # The answers and the digits of the trace are tokenized as before.
    for answer_text in ("2 3 4 7", " 4 2 2 7", "response 2 in, 3 out"):
        assert compact(answer_text)["input_ids"] == tokenizer(answer_text)["input_ids"]
    compact.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == ids


def test_trace_tokens_read_each_tag_and_its_comma_as_one_token(tokenizer, world_dir):
    phrases = trace_phrases()
    assert phrases == [" in,", " out,", " extra,", " odd,", " kept,", " missing,", " repeat,", "\ninput"]
    compact = build_tokenizer(tokenizer_corpus(world_dir), phrases=phrases)
    # Between them the three traces write all seven tags (checked by hand).
    cases = {("sort: 4 2 2 7", "2 3 4 7"): "response 2 in, 3 out, 4 in, 7 in\ninput 4 kept, 2 kept, 2 missing, 7 kept",
             ("unique: 5 2 2", "5 2 2"): "response 5 in, 2 in, 2 extra\ninput 5 kept, 2 kept, 2 repeat",
             ("evens: 3 4 6", "3 4"): "response 3 odd, 4 in\ninput 3 odd, 4 kept, 6 missing"}
    for (prompt, response), trace in cases.items():
        assert verification_trace(prompt, response) == trace
        ids = compact(trace)["input_ids"]
        assert compact.decode(ids) == trace
        pieces = [compact.decode([i]) for i in ids]
        # Every comma belongs to a tag's token: a tag verification_trace writes that trace_phrases
        # lacks would leave a "," of its own here.
        assert [p for p in pieces if "," in p] == [p for p in pieces if p in phrases and p.endswith(",")]
        assert pieces.count("\ninput") == 1 and len(ids) < len(tokenizer(trace)["input_ids"])
    # Each digit but a line's last is its own token, then its tag's (the small world's BPE splits a
    # line's last tag, a word it rarely saw).
    pieces = [compact.decode([i]) for i in compact(verification_trace("sort: 4 2 2 7", "2 3 4 7"))["input_ids"]]
    start = pieces.index("\ninput")
    assert pieces[:8] == ["response", " 2", " in,", " 3", " out,", " 4", " in,", " 7"]
    assert pieces[start:start + 7] == ["\ninput", " 4", " kept,", " 2", " kept,", " 2", " missing,"]
    # Only the trace is read differently.
    for text in ("2 3 4 7", "sort: 4 2 2 7", "digits yes, length no"):
        assert compact(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_the_base_stage_reads_phrases_as_tokens_only_when_asked(tiny_config, tmp_path):
    import selfreward.loop as loop
    from transformers import AutoConfig, AutoTokenizer

    sizes = {}
    for on in (False, True):
        run = tmp_path / str(on)
        cfg = tiny_config(f"model.phrase_tokens={str(on).lower()}", "threads=1")
        loop.stage_data(cfg, run)
        loop.stage_base(cfg, run)
        tok = AutoTokenizer.from_pretrained(run / "m0" / "model")
        phrases = fixed_phrases(run / "data")
        one_token = [len(tok(p, add_special_tokens=False)["input_ids"]) == 1 for p in phrases]
        assert all(one_token) if on else not any(one_token)
        assert AutoConfig.from_pretrained(run / "m0" / "model").vocab_size == len(tok)
        sizes[on] = len(tok)
    assert sizes[True] == sizes[False] + len(phrases)


def test_base_model_round_trip(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_base_model(tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    same = build_base_model(tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))

    write_base_model(tmp_path, tokenizer, model)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded_tok.chat_template == DEFAULT_CHAT_TEMPLATE
    assert loaded_tok.padding_side == "left"
    assert loaded_tok.eos_token_id == tokenizer.eos_token_id
    text = "User: sort: 3 1 4\nAssistant:\n"
    assert loaded_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded_tok.decode(loaded_tok(text)["input_ids"]) == text

    batch = tokenizer(["sort: 3 1 4", "reverse: 1 2 3 4 5"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
        got = loaded(**batch).logits
    assert torch.equal(expected, got)


def test_the_eft_stage_labels_the_models_own_answers(tiny_config, tmp_path):
    import selfreward.loop as loop

    cfg = tiny_config("iterations=0", "data.world.n_eft=200", "data.world.n_eft_own=60",
                      "data.world.eft_own_samples=2", "threads=1")
    rows = loop.run(cfg, tmp_path)
    data, m1 = tmp_path / "data", tmp_path / "m1"
    eft = read_jsonl(data / "eft.jsonl")
    own = [r for r in eft if r.get("kind") == "own"]
    seed_rows = read_jsonl(data / "eft_seed.jsonl")
    info = json.loads((m1 / "eft.done").read_text())
    assert (m1 / "ift_model" / "model.safetensors").is_file() and info["eft_prompts"] == 60
    assert len(eft) == len(seed_rows) + len(own) == info["eft"] and 0 < len(own) == info["eft_own"] <= 60
    prompts = {r["prompt"] for r in read_jsonl(data / "eft_own_prompts.jsonl")}
    for r in own:  # answers to the own-answer prompts, judged by the rubric
        assert r["prompt"] in prompts
        assert r["judgment"] == judgment_text(rubric_checks(r["prompt"], r["response"]))
    assert sorted(map(json.dumps, eft)) == sorted(map(json.dumps, seed_rows + own))
    assert rows[0]["time/eft_s"] > 0
    # Redone after a crash before its marker, the stage writes the same file (no row twice).
    before = (data / "eft.jsonl").read_bytes()
    (m1 / "eft.done").unlink()
    loop.stage_eft(cfg, tmp_path)
    assert (data / "eft.jsonl").read_bytes() == before
