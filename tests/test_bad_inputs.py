"""Every bad input stops at the door with one line, and never touches a finished run.

Two tables. CONFIG_ROWS: a bad value (or a file the config names) given to the shared finished
run ``tiny_run``; each must stop with exactly the expected line before any stage, and leave that
run's files byte for byte as they were. DATA_ROWS: a bad record in the user's own data folder
(``data=files``); the error names the user's file and line, not the run's copy. Nothing here
trains a model: a row that got past the checks fails at once instead of running stages.
"""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

import selfreward.loop as loop
from selfreward.rundir import SelfRewardError, lock_run_dir
from selfreward.data.builtin import WorldConfig, build_base_model, build_tokenizer, build_world, tokenizer_corpus
from conftest import TINY, TINY_RUN, compose_config

# A real model with the data folder; training=paper, as a pretrained model needs real training settings.
FILES_MODEL = ["model=qwen2_5_0_5b", "training=paper", "data=files", "data.dir={inputs}/data"]

CONFIG_ROWS = [
    # Values out of range (the ten the issue found first, then the rest of the schema's ranges).
    (["training.dpo.beta=0"], "invalid config: training.dpo.beta=0.0; allowed: a number > 0 (at 0 DPO cannot learn)"),
    (["generation.top_p=1.5"], "invalid config: generation.top_p=1.5; allowed: a number in (0, 1]"),
    (["generation.n_candidates=0"], "invalid config: generation.n_candidates=0; allowed: an integer >= 2 "
                                    "(a preference pair needs two candidates)"),
    (["generation.n_candidates=1"], "invalid config: generation.n_candidates=1; allowed: an integer >= 2 "
                                    "(a preference pair needs two candidates)"),
    (["generation.temperature=-1"], "invalid config: generation.temperature=-1.0; allowed: a number >= 0 (0 is greedy)"),
    (["prompts.n_requests=0"], "invalid config: prompts.n_requests=0; allowed: an integer >= 1"),
    (["training.dpo.learning_rate=-1"], "invalid config: training.dpo.learning_rate=-1.0; allowed: a number > 0"),
    (["judge.min_score=5", "judge.max_score=1"],
     "invalid config: judge.min_score=5, judge.max_score=1; allowed: min_score < max_score"),
    (["generation.top_p=0"], "invalid config: generation.top_p=0.0; allowed: a number in (0, 1]"),
    (["generation.temperature=nan"], "invalid config: generation.temperature=nan; allowed: a number >= 0 (0 is greedy)"),
    (["training.sft.learning_rate=inf"], "invalid config: training.sft.learning_rate=inf; allowed: a number > 0"),
    (["training.sft.epochs=0"], "invalid config: training.sft.epochs=0.0; allowed: a number > 0"),
    (["training.iteration_lr_decay=0"],
     "invalid config: training.iteration_lr_decay=0.0; allowed: a number in (0, 1] (1: every round alike)"),
    (["training.iteration_lr_decay=1.5"],
     "invalid config: training.iteration_lr_decay=1.5; allowed: a number in (0, 1] (1: every round alike)"),
    (["training.eft_replay_rows=-1"], "invalid config: training.eft_replay_rows=-1; allowed: an integer >= 0"),
    (["training.self_replay_rows=-1"], "invalid config: training.self_replay_rows=-1; allowed: an integer >= 0"),
    (["training.self_replay_kinds=[]"], "invalid config: training.self_replay_kinds=[]; allowed: a non-empty list "
     "of distinct kinds from prompts, judgments, answers"),
    (["training.self_replay_kinds=[answers,prompt]"], "invalid config: training.self_replay_kinds=['answers', "
     "'prompt']; allowed: a non-empty list of distinct kinds from prompts, judgments, answers"),
    (["training.self_replay_kinds=[answers,answers]"], "invalid config: training.self_replay_kinds=['answers', "
     "'answers']; allowed: a non-empty list of distinct kinds from prompts, judgments, answers"),
    (["training.eft_replay.learning_rate=0"], "invalid config: training.eft_replay.learning_rate=0.0; allowed: a number > 0"),
    (["training.dpo.batch_size=0"], "invalid config: training.dpo.batch_size=0; allowed: an integer >= 1"),
    (["training.rft.gradient_accumulation_steps=0"],
     "invalid config: training.rft.gradient_accumulation_steps=0; allowed: an integer >= 1"),
    (["training.sft.warmup_ratio=1.5"],
     "invalid config: training.sft.warmup_ratio=1.5; allowed: a number in [0, 1) (a share of the steps)"),
    (["judge.repeats=0"], "invalid config: judge.repeats=0; allowed: an integer >= 1"),
    (["judge.temperature=-0.5"], "invalid config: judge.temperature=-0.5; allowed: a number >= 0 (0 is greedy)"),
    (["prompts.shots=0"], "invalid config: prompts.shots=0; allowed: an integer >= 1"),
    (["prompts.top_p=2"], "invalid config: prompts.top_p=2.0; allowed: a number in (0, 1]"),
    (["prompts.min_chars=100", "prompts.max_chars=10"],
     "invalid config: prompts.min_chars=100, prompts.max_chars=10; allowed: min_chars <= max_chars"),
    (["iterations=-1"], "invalid config: iterations=-1; allowed: an integer >= 0"),
    (["threads=0"], "invalid config: threads=0; allowed: null or an integer >= 1"),
    (["evaluation.top_p=1.01"], "invalid config: evaluation.top_p=1.01; allowed: a number in (0, 1]"),
    (["evaluation.judge_repeats=0"], "invalid config: evaluation.judge_repeats=0; allowed: null or an integer >= 1"),
    (["pairs.min_margin=-1"], "invalid config: pairs.min_margin=-1.0; allowed: a number >= 0"),
    # Fixed choices, and values a library defines.
    (["pairs.method=max_random"], "invalid config: pairs.method='max_random'; allowed: one of best_worst, all_pairs, "
     "length_control, random"),
    (["pairs.rho=1.5"], "invalid config: pairs.rho=1.5; allowed: a number in [0, 1]"),
    (["pairs.rho=-0.1"], "invalid config: pairs.rho=-0.1; allowed: a number in [0, 1]"),
    (["+reward.temperature=2"], "invalid config: reward.temperature is not a parameter of "
     "selfreward.rewards.self_judge.score; allowed: no parameters"),
    (["reward=teacher"], "invalid config: reward.model is not set; selfreward.rewards.teacher.score needs it "
     "(reward.model=...)"),
    (["reward=teacher", "reward.model={inputs}/no_weights"], "invalid config: reward.model='{inputs}/no_weights': "
     "the folder has no weights (model.safetensors or pytorch_model.bin)"),
    (["reward=teacher", "reward.model={inputs}/model", "reward.template={inputs}/no_response.txt"], "invalid config: "
     "reward.template='{inputs}/no_response.txt': the template has no {response} field; allowed: a template with "
     "{prompt}, {response}"),
    (["reward=constitution", "reward.principles=[]"], "invalid config: reward.principles=[]; allowed: a list of one "
     "or more principles, each one non-empty line"),
    (["reward=constitution", "reward.template=judge_additive"], "invalid config: reward.template='judge_additive': "
     "the template has no {principles} field; allowed: a template with {principles}, {min_score}, {max_score}, "
     "{prompt}, {response}"),
    (["reward=likelihood", "reward.length_normalised=maybe"], "invalid config: reward.length_normalised='maybe'; "
     "allowed: true or false"),
    (["reward=likelihood", "+reward.per_char=true"], "invalid config: reward.per_char is not a parameter of "
     "selfreward.rewards.likelihood.score; allowed: length_normalised"),
    (["reward=reward_model", "reward.epochs=0"], "invalid config: reward.epochs=0; allowed: a number > 0"),
    (["reward=likelihood", "training.objective=rft"], "invalid config: training.objective=rft with reward=likelihood; "
     "allowed: rft keeps candidates at judge.max_score, so it needs a reward on the judge's scale (self_judge, oracle, "
     "teacher, constitution)"),
    (["reward_shaping=ctrl", "reward_shaping.k=0"], "invalid config: reward_shaping.k=0; allowed: an integer >= 1"),
    (["reward_shaping=ctrl", "reward_shaping.t=0"], "invalid config: reward_shaping.t=0.0; allowed: a nonzero number "
     "(> 0 for Best-of-N, < 0 for Worst-of-N)"),
    (["reward_shaping.method=ctlr"], "invalid config: reward_shaping.method='ctlr'; allowed: one of none, ctrl"),
    (["reward_shaping=ctrl", "training.objective=rft"], "invalid config: training.objective=rft with "
     "reward_shaping.method=ctrl; allowed: rft keeps candidates at judge.max_score, so it needs the reward unshaped "
     "(reward_shaping=none)"),
    (["evaluation=best_of_n", "evaluation.best_of_n_sizes=[0,2]"], "invalid config: evaluation.best_of_n_sizes=[0, 2]; "
     "allowed: a non-empty list of integers >= 1"),
    (["evaluation.best_of_n_sizes=[]"], "invalid config: evaluation.best_of_n_sizes=[]; allowed: a non-empty list of "
     "integers >= 1"),
    (["reward._target_=selfreward.rewards.nowhere.score"], "invalid config: "
     "reward._target_='selfreward.rewards.nowhere.score'; allowed: the dotted path of a reward function such as "
     "selfreward.rewards.self_judge.score (conf/reward/)"),
    (["training.dpo.loss_type=dpo"], "invalid config: training.dpo.loss_type='dpo'; allowed: one of sigmoid, hinge, "
     "ipo, exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, "
     "sigmoid_norm"),
    (["training.sft.lr_scheduler_type=cosin"], "invalid config: training.sft.lr_scheduler_type='cosin'; allowed: one "
     "of linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, inverse_sqrt, "
     "reduce_lr_on_plateau, cosine_with_min_lr, cosine_warmup_with_min_lr, warmup_stable_decay, greedy"),
    (["model.dtype=float33"],
     "invalid config: model.dtype='float33'; allowed: auto or a torch dtype such as float32, bfloat16, float16"),
    (["model.device=gpu"], "invalid config: model.device='gpu'; allowed: auto or a torch device such as cpu, cuda, cuda:1"),
    (["model.num_heads=3"],
     "invalid config: model.hidden_size=64, model.num_heads=3; allowed: hidden_size a multiple of num_heads"),
    (["data.world.tasks=[sort,multiply]"], "invalid config: data.world: tasks must be distinct names from "
     "['sort', 'reverse', 'unique', 'evens'], got ['sort', 'multiply']"),
    (["+judge.repeatz=3"], "invalid config: unknown key 'judge.repeatz'"),
    # Combinations that cannot work.
    (["data=files", "data.dir={inputs}/data"], "invalid config: model.name_or_path='builtin' with "
     "data.source='files'; allowed: the built-in model only with data=builtin (its tokenizer is built from that "
     "world); set model=... to a real model"),
    ([*FILES_MODEL, "model.phrase_tokens=true"], "invalid config: model.phrase_tokens=true with "
     "model.name_or_path='Qwen/Qwen2.5-0.5B'; allowed: phrase tokens only for the built-in model, whose "
     "tokenizer is built here (the built-in recipe sets them: add recipe=none for other models)"),
    ([*FILES_MODEL, "model.trace_tokens=true"], "invalid config: model.trace_tokens=true with "
     "model.name_or_path='Qwen/Qwen2.5-0.5B'; allowed: trace tokens only for the built-in model, whose "
     "tokenizer is built here (the built-in recipe sets them: add recipe=none for other models)"),
    (["model.trace_tokens=true"], "invalid config: model.trace_tokens=true with data.world.judge_trace=false; "
     "allowed: trace tokens only with the judge's verification trace (experiment=judge_trace sets it)"),
    (["reward=oracle", *FILES_MODEL], "invalid config: reward=oracle with data.source='files'; "
     "allowed: reward=oracle needs data=builtin, the only world with a graded oracle"),
    # Templates: missing, without their fields, not UTF-8.
    (["judge.template={inputs}/none.txt"], "invalid config: judge.template='{inputs}/none.txt': template "
     "'{inputs}/none.txt' is neither a built-in (judge_additive, judge_additive_small, judge_constitution, "
     "judge_multiple_choice, "
     "judge_pairwise, meta_judge, meta_judge_small, self_instruct, self_instruct_small) nor a file"),
    (["judge.template={inputs}/no_response.txt"], "invalid config: judge.template='{inputs}/no_response.txt': the "
     "template has no {response} field; allowed: a template with {prompt}, {response}"),
    (["judge.template={inputs}/latin1.txt"], "invalid config: judge.template='{inputs}/latin1.txt': "
     "{inputs}/latin1.txt:2: not UTF-8 text (byte 0xe9)"),
    (["prompts.template={inputs}/no_examples.txt"], "invalid config: prompts.template='{inputs}/no_examples.txt': "
     "the template has no {examples} field; allowed: a template with {examples}"),
    (["evaluation=position_bias", "judge.pairwise_template={inputs}/no_b.txt"], "invalid config: "
     "judge.pairwise_template='{inputs}/no_b.txt': the template has no {response_b} field; allowed: a template "
     "with {prompt}, {response_a}, {response_b}"),
    # The data folder.
    (["model=qwen2_5_0_5b", "training=paper", "data=files"], "invalid config: data.dir=None; allowed: with data=files, a folder "
     "holding ift.jsonl, eft.jsonl, eval_prompts.jsonl and judge_eval.jsonl (data.dir=FOLDER)"),
    (["model=qwen2_5_0_5b", "training=paper", "data=files", "data.dir={inputs}/nowhere"],
     "invalid config: data.dir='{inputs}/nowhere' is not a folder"),
    (["model=qwen2_5_0_5b", "training=paper", "data=files", "data.dir={inputs}/half_data"], "invalid config: "
     "data.dir='{inputs}/half_data' has no eft.jsonl (it needs ift.jsonl, eft.jsonl, eval_prompts.jsonl, "
     "judge_eval.jsonl)"),
    (["data=oasst", "model=qwen2_5_0_5b", "training=paper", "data.oasst.source={inputs}/no_oasst"], "invalid config: "
     "data.oasst.source='{inputs}/no_oasst' is not a folder (a hub id, or a folder with train.jsonl[.gz] and "
     "validation.jsonl[.gz])"),
    # Local model folders: missing, not a model, without weights, a tokenizer that cannot load.
    ([*FILES_MODEL, "model.name_or_path={inputs}/no_model"],
     "invalid config: model.name_or_path='{inputs}/no_model': no such folder"),
    ([*FILES_MODEL, "model.name_or_path={inputs}/data"],
     "invalid config: model.name_or_path='{inputs}/data': not a model folder (no config.json)"),
    ([*FILES_MODEL, "model.name_or_path={inputs}/no_weights"], "invalid config: "
     "model.name_or_path='{inputs}/no_weights': the folder has no weights (model.safetensors or pytorch_model.bin)"),
    ([*FILES_MODEL, "model.name_or_path={inputs}/bad_tokenizer"], "invalid config: "
     "model.name_or_path='{inputs}/bad_tokenizer': the tokenizer cannot be loaded ("),
    ([*FILES_MODEL, "model.name_or_path={inputs}/model", "model.tokenizer={inputs}/data"], "invalid config: "
     "model.tokenizer='{inputs}/data': the tokenizer cannot be loaded ("),
    (["prompts.writer={inputs}/no_weights"], "invalid config: prompts.writer='{inputs}/no_weights': the folder has "
     "no weights (model.safetensors or pytorch_model.bin)"),
    # A valid config that is not the one the run was made with.
    (["judge.repeats=5"], "{run} holds a run made with another config (judge.repeats: 2 -> 5); resume it with the "
     "same config, or pick another hydra.run.dir"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The files the bad configs name: a small data folder, model folders, templates."""
    root = tmp_path_factory.mktemp("inputs")
    build_world(WorldConfig(n_ift=60, n_self_instruct=10, n_eft=60, n_eval_prompts=8, n_judge_eval=4), root / "data")
    tokenizer = build_tokenizer(tokenizer_corpus(root / "data"), vocab_size=128)
    model = build_base_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                             max_position_embeddings=128)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    shutil.copytree(root / "model", root / "no_weights", ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copytree(root / "model", root / "bad_tokenizer")
    (root / "bad_tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    (root / "half_data").mkdir()
    shutil.copyfile(root / "data" / "ift.jsonl", root / "half_data" / "ift.jsonl")
    (root / "no_response.txt").write_text("Rate this answer to {prompt}.\nScore: <points>")
    (root / "latin1.txt").write_bytes("Rate {prompt}\n<response>{response}</response> \u00e9t\u00e9\n".encode("latin-1"))
    (root / "no_examples.txt").write_text("Write a new task.\nTask:")
    (root / "no_b.txt").write_text("{prompt}\nA: {response_a}\nWinner: A or B")
    return root


def _snapshot(run_dir):
    """Every file of a run and a hash of its bytes (the lock file is not run content)."""
    return {str(p.relative_to(run_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "run.lock"}


@pytest.fixture
def no_stages(monkeypatch):
    """A row that got past the checks must fail here, not run (and train) stages."""
    def fail(*args, **kwargs):
        raise AssertionError("the bad input got past the checks")
    monkeypatch.setattr(loop, "_run", fail)


@pytest.mark.parametrize("overrides, message", CONFIG_ROWS, ids=[" ".join(o) for o, _ in CONFIG_ROWS])
def test_a_bad_config_stops_before_any_stage_and_leaves_the_finished_run(overrides, message, tiny_run, inputs,
                                                                         no_stages):
    before = _snapshot(tiny_run)
    cfg = compose_config([*TINY_RUN, *(o.format(inputs=inputs) for o in overrides)])
    with pytest.raises(SelfRewardError) as error:
        loop.run(cfg, tiny_run)
    text = str(error.value)
    expected = message.replace("{inputs}", str(inputs)).replace("{run}", str(tiny_run))
    assert "\n" not in text
    assert text.startswith(expected) if expected.endswith("(") else text == expected
    assert _snapshot(tiny_run) == before


def test_a_run_dir_in_use_stops_a_second_run(tiny_run, no_stages):
    before = _snapshot(tiny_run)
    with lock_run_dir(tiny_run):  # as another process running it would
        with pytest.raises(SelfRewardError, match=r"seed0 is in use by another selfreward process \(it holds "
                                                  r".*run.lock\); wait for it to finish, or pick another hydra"):
            loop.run(compose_config(TINY_RUN), tiny_run)
    assert _snapshot(tiny_run) == before


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "selfreward.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_the_cli_exits_2_with_one_line_and_hydra_writes_nothing(tiny_run):
    # Through the command: Hydra would write .hydra/ and a log into the run directory if the
    # check came after it set the run up.
    before = _snapshot(tiny_run)
    done = _cli(*TINY_RUN, "generation.top_p=1.5", f"hydra.run.dir={tiny_run}")
    assert done.returncode == 2
    assert done.stderr.strip() == "selfreward: error: invalid config: generation.top_p=1.5; allowed: a number in (0, 1]"
    # A command line Hydra cannot compose is a bad config too.
    assert _cli("judge.repeats=many", f"hydra.run.dir={tiny_run}").returncode == 2
    assert _snapshot(tiny_run) == before and not (tiny_run / ".hydra").exists()


def test_the_cli_on_a_run_dir_in_use_stops_before_hydra_writes(tiny_run):
    before = _snapshot(tiny_run)
    with lock_run_dir(tiny_run):  # another process holds it
        done = _cli(*TINY_RUN, f"hydra.run.dir={tiny_run}")
    assert done.returncode == 1
    assert done.stderr.strip() == (f"selfreward: error: {tiny_run} is in use by another selfreward process (it holds "
                                   f"{tiny_run}/run.lock); wait for it to finish, or pick another hydra.run.dir")
    assert _snapshot(tiny_run) == before and not (tiny_run / ".hydra").exists()


# (file, line number, what the line becomes (str or bytes; None deletes it), expected message after "{src}/")
def _row(number, **fields):
    """A record of the small data folder with some fields replaced (a JSON line)."""
    return lambda rows: json.dumps({**rows[number - 1], **fields})


DATA_ROWS = [
    ("eft", 3, lambda rows: b'{"prompt": "sort: 1 2", "response": "caf\xe9"}',
     "eft.jsonl:3: not UTF-8 text (byte 0xe9 at column 41); save the file as UTF-8"),
    ("ift", 2, lambda rows: '{"prompt": "sort: 1 2", "response": ', "ift.jsonl:2: not valid JSON (Expecting value)"),
    ("eval_prompts", 1, lambda rows: '["sort: 1 2"]', "eval_prompts.jsonl:1: expected a JSON object, got list"),
    ("ift", 4, lambda rows: '{"prompt": "sort: 1 2"}', "ift.jsonl:4: the record has no 'response'"),
    ("ift", 1, _row(1, prompt="  "), "ift.jsonl:1: 'prompt' must be a non-empty string"),
    ("ift", 5, _row(5, response=["1", "2"]), "ift.jsonl:5: 'response' must be a string, got list"),
    ("eft", 2, _row(2, judgment=5), "eft.jsonl:2: 'judgment' must be a string, got int"),
    ("eft", 2, _row(2, judgment="looks fine"),
     "eft.jsonl:2: the judgment does not end with a 'Score: N' line, N in [0, 5]"),
    ("eft", 6, _row(6, judgment="digits yes\nScore: 9"),
     "eft.jsonl:6: the judgment does not end with a 'Score: N' line, N in [0, 5]"),
    ("judge_eval", 1, lambda rows: json.dumps({k: v for k, v in rows[0].items() if k not in ("scores", "ranks")}),
     "judge_eval.jsonl:1: the record has neither 'scores' nor 'ranks'"),
    ("judge_eval", 2, _row(2, scores=[1]), "judge_eval.jsonl:2: needs 2+ responses and one label per response"),
    ("judge_eval", 1, _row(1, responses="1 2 3"), "judge_eval.jsonl:1: 'responses' must be a list of strings"),
    ("judge_eval", 3, _row(3, scores=["5", "4", "1", "0"]),
     "judge_eval.jsonl:3: 'scores' or 'ranks' must be a list of numbers"),
]


def _write_lines(path, rows_text):
    data = b"".join((t if isinstance(t, bytes) else t.encode()) + b"\n" for t in rows_text)
    path.write_bytes(data)


@pytest.mark.parametrize("name, number, change, message", DATA_ROWS, ids=[m.split(":")[0] + ":" + m.split(":")[1]
                                                                          for *_, m in DATA_ROWS])
def test_a_bad_data_record_names_the_users_file_and_line(name, number, change, message, inputs, tmp_path,
                                                         monkeypatch):
    src = tmp_path / "mine"
    shutil.copytree(inputs / "data", src)
    lines = (src / f"{name}.jsonl").read_text().splitlines()
    lines[number - 1] = change([json.loads(line) for line in lines])
    _write_lines(src / f"{name}.jsonl", lines)
    monkeypatch.setattr(loop, "base_model_path", lambda *a: pytest.fail("the bad record got past the data stage"))
    cfg = compose_config([*TINY, "model=qwen2_5_0_5b", "training=paper", "data=files", f"data.dir={src}",
                          f"model.name_or_path={inputs}/model"])
    run_dir = tmp_path / "run"
    with pytest.raises(SelfRewardError) as error:
        loop.run(cfg, run_dir)
    assert str(error.value) == f"{src}/{message}"
    assert not (run_dir / "data" / "data.done").exists()


def test_line_numbers_count_blank_lines_and_an_empty_file_is_named(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "base_model_path", lambda *a: pytest.fail("got past the data stage"))
    src = tmp_path / "mine"
    shutil.copytree(inputs / "data", src)
    lines = (src / "eft.jsonl").read_text().splitlines()
    _write_lines(src / "eft.jsonl", [lines[0], "", "", lines[1], '{"prompt": "x"}', *lines[2:]])
    cfg = compose_config([*TINY, "model=qwen2_5_0_5b", "training=paper", "data=files", f"data.dir={src}",
                          f"model.name_or_path={inputs}/model"])
    with pytest.raises(SelfRewardError, match=rf"^{src}/eft.jsonl:5: the record has no 'response'$"):
        loop.run(cfg, tmp_path / "run")
    (src / "eft.jsonl").write_text("\n")
    with pytest.raises(SelfRewardError, match=rf"^{src}/eft.jsonl: no records \(the eft set must not be empty\)$"):
        loop.run(cfg, tmp_path / "run")

