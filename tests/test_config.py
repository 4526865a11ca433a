"""Every config file composes against the schema; typos and wrong types fail at start."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from selfreward.config import Config, register_configs, validate
from selfreward.rundir import SelfRewardError

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())

register_configs()


def _compose(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_group_has_options():
    assert {"model", "data", "prompts", "generation", "judge", "pairs", "training", "evaluation", "logger",
            "experiment"} <= set(GROUPS)


@pytest.mark.parametrize(
    "group, option",
    [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))],
)
def test_every_config_file_composes(group, option):
    cfg = _compose([f"{group}={option}"])
    # Resolve everything that can be resolved (data.dir of data=files is mandatory: ???).
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_experiment_files_open_with_the_command_that_runs_them():
    for path in (CONF / "experiment").glob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0] == "# @package _global_", path
        assert lines[1].startswith("# selfreward ") and f"experiment={path.stem}" in lines[1], path


def test_judge_overrule_builds_on_judge_trace():
    cfg = _compose(["experiment=judge_overrule"])
    assert cfg.experiment_name == "judge_overrule"
    assert (cfg.data.world.judge_trace, cfg.pairs.majority_agrees, cfg.prompts.writer) == (True, True, "m1")
    assert (cfg.data.world.n_eft, cfg.data.world.n_eft_own) == (1500, 4500)
    assert (cfg.pairs.overrule_majority_below, cfg.pairs.overrule_until_iteration) == (3.0, 1)
    assert cfg.judge.continue_unscored == 4 and cfg.judge.max_new_tokens == 128
    # The heavier NLL term replaces tiny.yaml's and the second round slows less than judge_trace's;
    # the rest of the DPO settings stay.
    assert (cfg.training.dpo.sft_weight, cfg.training.dpo.beta, cfg.training.iteration_lr_decay) == (6.0, 0.1, 0.6)
    assert _compose(["experiment=judge_trace"]).training.iteration_lr_decay == 0.3
    # 4,000 seed EFT rows judged in the first round, 500 in the second.
    assert (cfg.training.eft_pairs_rows, cfg.training.eft_pairs_rows_decay) == (4000, 0.125)
    # Four rows the judge got right as NLL-only anchors per judgment pair (off in the schema).
    assert cfg.training.eft_pairs_anchors == 4.0 and _compose(["recipe=none"]).training.eft_pairs_anchors == 0.0
    validate(cfg)


def test_judge_fast_is_judge_overrule_in_two_processes_with_the_faster_settings():
    fast, overrule = _compose(["experiment=judge_fast"]), _compose(["experiment=judge_overrule"])
    assert (fast.experiment_name, fast.processes, fast.threads) == ("judge_fast", 2, 1)
    assert fast.model.phrase_tokens and fast.model.trace_tokens and fast.training.dpo.precompute_ref_log_probs
    assert (fast.training.sft_judge_repeats, overrule.training.sft_judge_repeats) == (2, 3)
    # Everything else is judge_overrule's.
    changed = {"experiment_name", "processes", "threads", "model", "training"}
    assert {k: v for k, v in fast.items() if k not in changed} == {k: v for k, v in overrule.items() if k not in changed}
    fast.training.sft_judge_repeats = 3
    fast.training.dpo.precompute_ref_log_probs = False
    assert fast.training == overrule.training
    validate(fast)


def test_judge_mid_is_judge_fast_with_more_judging_rows_and_the_exact_speed_ups():
    mid, fast = _compose(["experiment=judge_mid"]), _compose(["experiment=judge_fast"])
    assert mid.experiment_name == "judge_mid"
    assert (mid.training.sft_judge_repeats, mid.data.world.n_eft_own) == (3, 3800)
    assert (fast.training.sft_judge_repeats, fast.data.world.n_eft_own) == (2, 4500)
    assert mid.training.sft.length_buckets == 2 and mid.training.dpo.nll_only_shortcut
    # Everything else is judge_fast's.
    mid.experiment_name, mid.data.world.n_eft_own, mid.training.sft_judge_repeats = "judge_fast", 4500, 2
    mid.training.sft.length_buckets, mid.training.dpo.nll_only_shortcut = 1, False
    assert mid == fast
    validate(_compose(["experiment=judge_mid"]))


def test_an_experiment_file_overrides_the_main_config():
    cfg = _compose(["experiment=smoke"])
    assert cfg.experiment_name == "smoke" and cfg.model.hidden_size == 64
    # The command line still wins over the experiment file.
    assert _compose(["experiment=smoke", "iterations=1"]).iterations == 1


def test_defaults():
    cfg = _compose(["recipe=none"])
    # The schema samples N=8 at temperature 1.0 for diverse candidates (the built-in recipe 16); the
    # paper's experiment keeps the paper's N=4 at 0.7, top-p 0.9.
    assert cfg.iterations == 2 and cfg.generation.n_candidates == 8
    assert cfg.generation.temperature == 1.0 and cfg.generation.top_p == 1.0
    paper = _compose(["experiment=paper"]).generation
    assert (paper.n_candidates, paper.temperature, paper.top_p) == (4, 0.7, 0.9)
    assert cfg.judge.repeats == 3 and cfg.training.dpo.beta == 0.1
    assert cfg.training.dpo.reference == "previous"
    assert cfg.data.world.seed == cfg.seed
    recipe = _compose()
    assert (recipe.generation.n_candidates, recipe.judge.repeats, recipe.processes) == (16, 1, 2)


def test_the_default_is_judge_mid_with_3000_then_2000_seed_rows_on_three_layers():
    # conf/recipe/builtin.yaml repeats the experiment chain judge_trace -> ... -> judge_mid with
    # the settings measured on top of it (docs/results.md): the two must not drift apart.
    default = dict(_flat(OmegaConf.to_container(_compose(), resolve=False)))
    measured = dict(_flat(OmegaConf.to_container(_compose(
        ["experiment=judge_mid", "training.eft_pairs_rows=3000", "training.eft_pairs_rows_decay=0.6667",
         "model.num_layers=3", "training.dpo.iteration_epochs=[4,2]"]),
        resolve=False)))
    differ = {k: (default.get(k), measured.get(k)) for k in default.keys() | measured.keys()
              if default.get(k) != measured.get(k)}
    assert differ == {"experiment_name": ("default", "judge_mid")}
    validate(_compose())


@pytest.mark.parametrize("experiment", ["smoke", "judge_trace", "judge_own_eft", "meta_rewarding", "paper",
                                        "real_smoke"])
def test_experiments_measured_on_the_plain_schema_keep_it(experiment):
    # These files hold what they change from the schema's plain values, as when they were measured.
    assert _compose([f"experiment={experiment}"]) == _compose([f"experiment={experiment}", "recipe=none"])


@pytest.mark.parametrize("experiment", ["oracle_reward", "random_pairs", "rft_oracle", "sft_best"])
def test_the_controls_build_on_the_default_recipe(experiment):
    cfg = _compose([f"experiment={experiment}"])
    validate(cfg)
    assert cfg.processes == 2 and cfg.model.phrase_tokens and cfg.data.world.n_eft_own == 3800
    validate(_compose([f"experiment={experiment}", "recipe=none"]))


def test_the_recipe_names_recipe_none_for_other_models():
    with pytest.raises(SelfRewardError, match="add recipe=none for other models"):
        validate(_compose(["model=smollm2_135m"]))
    plain = _compose(["model=smollm2_135m", "recipe=none"]).model
    assert not plain.phrase_tokens and not plain.trace_tokens


@pytest.mark.parametrize("override", ["judge.repeatz=3", "model=no_such_model"])
def test_unknown_keys_fail(override):
    with pytest.raises(ConfigCompositionException):
        _compose([override])


def test_keys_added_with_plus_are_caught_by_validate():
    cfg = _compose(["+judge.repeatz=3"])
    with pytest.raises(SelfRewardError, match="repeatz"):
        validate(cfg)
    validate(_compose())


def test_wrong_type_fails():
    with pytest.raises(ConfigCompositionException, match="repeats"):
        _compose(["judge.repeats=many"])


@pytest.mark.parametrize("override, message", [
    ("pairs.method=max_random", "pairs.method='max_random'; allowed: one of best_worst, all_pairs, length_control, "
     "random"),
    ("training.dpo.reference=m0", "training.dpo.reference"),
    ("generation.backend=tgi", "generation.backend='tgi'; allowed: one of hf, vllm"),
    ("iterations=-1", "iterations=-1; allowed: an integer >= 0"),
    ("pairs.tie_break=last", "pairs.tie_break='last'; allowed: one of first, frequent"),
    ("pairs.method=all_pairs pairs.tie_break=frequent", "pairs.tie_break=frequent with pairs.method=all_pairs"),
    ("pairs.method=random pairs.unique_best=true", "pairs.unique_best=true with pairs.method=random; allowed: "
     "unique_best=false"),
    ("pairs.method=all_pairs pairs.majority_agrees=true", "pairs.majority_agrees=true with pairs.method=all_pairs; "
     "allowed: majority_agrees=false"),
    ("pairs.method=random pairs.min_vote_share=0.5", "pairs.min_vote_share=0.5 with pairs.method=random; "
     "allowed: min_vote_share=0"),
    ("pairs.min_vote_share=2", "pairs.min_vote_share=2"),
    ("pairs.overrule_majority_below=-1", "pairs.overrule_majority_below=-1"),
    ("pairs.overrule_until_iteration=-1", "pairs.overrule_until_iteration=-1; allowed: an integer >= 0"),
    ("pairs.overrule_majority_below=3", "pairs.overrule_majority_below=3.0 with pairs.majority_agrees=false"),
    ("judge.continue_unscored=-1", "judge.continue_unscored=-1; allowed: an integer >= 0 (0: off)"),
    ("judge=expected judge.continue_unscored=2", "judge.continue_unscored=2 with judge.mode=expected; "
     "allowed: judge.mode=sample"),
    ("training.dpo.nll_only_shortcut=true training.dpo.sft_weight=0", "training.dpo.nll_only_shortcut=true with "
     "training.dpo.loss_type=sigmoid and training.dpo.sft_weight=0.0; allowed: loss_type sigmoid with sft_weight"),
    ("training.dpo.nll_only_shortcut=true training.dpo.loss_type=ipo", "training.dpo.loss_type=ipo"),
    ("training.dpo.group_by_length_until_iteration=1", "training.dpo.group_by_length=false; it would change nothing"),
    ("training.dpo.iteration_epochs=[2,0]", "training.dpo.iteration_epochs=[2.0, 0.0]; allowed: a list of numbers > 0"),
    ("training.dpo.iteration_epochs=[-1]", "training.dpo.iteration_epochs=[-1.0]; allowed: a list of numbers > 0"),
    ("prompts.iteration_requests=[100,0]", "prompts.iteration_requests=[100, 0]; allowed: a list of integers >= 1"),
    ("training.sft.length_buckets=0", "training.sft.length_buckets=0; allowed: an integer >= 1 (1: one pass per batch)"),
    ("training.rft.length_buckets=-2", "training.rft.length_buckets=-2; allowed: an integer >= 1"),
    ("training.dpo.group_by_length=true training.dpo.group_by_length_until_iteration=-1",
     "training.dpo.group_by_length_until_iteration=-1; allowed: an integer >= 0"),
])
def test_bad_choices_fail_before_any_stage(override, message):
    with pytest.raises(SelfRewardError, match=re.escape(message)):
        validate(_compose(["recipe=none", *override.split()]))


def test_oracle_judge_needs_the_builtin_world():
    with pytest.raises(SelfRewardError, match="reward=oracle needs data=builtin"):
        validate(_compose(["recipe=none", "reward=oracle", "data=files", "data.dir=/tmp",
                           "model=qwen2_5_0_5b"]))


def _flat(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_the_schema_is_the_one_source_of_defaults():
    # `selfreward recipe=none` runs the schema's values: a default group file that set another
    # value would make config.py lie about the defaults (as it once did for N, T, top-p). The
    # built-in recipe is the one file on top (test_the_default_is_judge_mid_with_...).
    schema = dict(_flat(OmegaConf.to_container(OmegaConf.structured(Config))))
    default = dict(_flat(OmegaConf.to_container(_compose(["recipe=none"]), resolve=False)))
    assert schema.keys() == default.keys()
    differ = {k: (schema[k], default[k]) for k in schema
              if schema[k] != default[k] and not str(default[k]).startswith("${")}
    assert differ == {}


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "reward").glob("*.yaml")))
def test_every_reward_file_validates_or_names_what_it_needs(option):
    cfg = _compose([f"reward={option}"])
    if option == "teacher":  # a teacher model has no default: the user names one
        with pytest.raises(SelfRewardError, match=r"reward.model is not set"):
            validate(cfg)
    else:
        validate(cfg)
    assert cfg.reward._target_ == f"selfreward.rewards.{option}.score"


def test_the_oracle_controls_score_with_the_oracle_reward():
    for experiment in ("oracle_reward", "rft_oracle"):
        assert _compose([f"experiment={experiment}"]).reward._target_ == "selfreward.rewards.oracle.score"
    assert _compose().reward._target_ == "selfreward.rewards.self_judge.score"


def test_the_vllm_backend_needs_vllm_at_config_check_time(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as in an environment without it
    with pytest.raises(SelfRewardError, match="generation.backend=vllm needs the vllm package"):
        validate(_compose(["generation.backend=vllm"]))
    with pytest.raises(SelfRewardError, match="gpu_memory_utilization"):
        monkeypatch.setitem(sys.modules, "vllm", type(sys)("vllm"))  # a stand-in that imports
        validate(_compose(["generation.backend=vllm", "generation.vllm.gpu_memory_utilization=1.5"]))


def test_sft_judge_repeats_repeat_the_eft_rows_only():
    from selfreward.data import SeedData
    from selfreward.loop import sft_examples

    data = SeedData(ift=[{"prompt": "sort: 2 1", "response": "1 2"}],
                    eft=[{"prompt": "sort: 2 1", "response": "2 1", "judgment": "order no\nScore: 4"}],
                    eval_prompts=[], judge_eval=[])
    once = sft_examples(data, _compose(["recipe=none"]))
    thrice = sft_examples(data, _compose(["recipe=none", "training.sft_judge_repeats=3"]))
    assert len(once) == 2 and thrice == once + [once[1]] * 2
    assert once[1]["completion"] == "order no\nScore: 4" and "sort: 2 1" in once[1]["prompt"]
    trace = _compose(["experiment=judge_trace"])
    assert trace.training.sft_judge_repeats == 3
    assert (trace.prompts.n_requests, trace.prompts.writer, trace.pairs.majority_agrees,
            trace.pairs.tie_break) == (6000, "m1", True, "frequent")
    validate(trace)
    with pytest.raises(SelfRewardError, match=r"training.sft_judge_repeats"):
        validate(_compose(["training.sft_judge_repeats=0"]))
