"""The configuration schema.

These dataclasses are registered in Hydra's ConfigStore as ``base_config``; ``conf/config.yaml``
starts from it and the YAML files of each group fill it in. Because the schema is structured, a
misspelt key or a value of the wrong type stops the run at start with Hydra's message naming
the key. One dataclass per config group, named like the group and the module that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from selfreward.data import SOURCES, WorldConfig
from selfreward.pairs import METHODS as PAIR_METHODS, TIE_BREAKS
from selfreward.vllm_engine import VLLMSettings  # the schema of generation.vllm (imports no vllm)
from selfreward.rundir import SelfRewardError


@dataclass
class ModelConfig:
    """The base model. ``builtin`` builds the tiny Llama of the built-in world from the sizes below."""

    name_or_path: str = "builtin"  # "builtin", a Hugging Face hub id or a local folder
    tokenizer: str | None = None  # defaults to name_or_path
    dtype: str = "auto"  # auto: bfloat16 on a GPU that supports it, float32 otherwise
    device: str = "auto"  # auto: cuda if available, else cpu
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2; None lets transformers pick
    chat_template: str | None = None  # used only when the tokenizer has none; None = a plain User/Assistant one
    trust_remote_code: bool = False
    # Sizes of the built-in model (ignored for hub/local models).
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 256
    # The built-in tokenizer reads the judge turn's fixed text (rubric, markup, verdict words) as
    # single tokens: judging rows about 2.2x shorter (selfreward/data/builtin.py, fixed_phrases).
    phrase_tokens: bool = False
    # The verification trace's tags with their commas (" in,", " kept,", ...) and "\ninput" as single
    # tokens: judging rows about 13% shorter again (selfreward/data/builtin.py, trace_phrases).
    trace_tokens: bool = False


@dataclass
class OasstConfig:
    """The paper's seed data from Open Assistant (selfreward/data/oasst.py)."""

    source: str = "OpenAssistant/oasst1"  # a hub id, or a local folder with train.jsonl[.gz]
    lang: str = "en"
    n_eval: int = 253  # held-out first-turn prompts
    n_judge_eval: int = 541  # held-out ranked prompts for judge evaluation
    # EFT: the most common score is cut to this many times the second most common one.
    keep_most_common: float = 1.0


@dataclass
class DataConfig:
    """Seed and held-out data: the built-in world, or a folder of JSON Lines files."""

    source: str = "builtin"  # builtin | files | oasst
    # For source=files: a folder holding ift.jsonl, eft.jsonl, eval_prompts.jsonl, judge_eval.jsonl.
    dir: str | None = None
    world: WorldConfig = field(default_factory=WorldConfig)
    oasst: OasstConfig = field(default_factory=OasstConfig)
    # Limits applied to whatever the source gives (null = all); useful to shrink real data sets.
    max_ift: int | None = None
    max_eft: int | None = None
    max_eval_prompts: int | None = None
    max_judge_eval: int | None = None


@dataclass
class PromptsConfig:
    """Self-instruction: the current model (or a fixed writer model) writes new prompts."""

    template: str = "self_instruct_small"
    # "current" = M_t; "m1" = the run's M1 in every iteration, a fixed writer as in the paper (its
    # prompts come from a fixed instruction model); otherwise a model id/path used as the fixed writer
    writer: str = "current"
    shots: int = 4  # k demonstrations drawn from the seed prompts for each request
    n_requests: int = 1500  # prompts asked for per iteration (before filtering)
    # Each iteration's requests where the list reaches (iteration t: its t-th value); empty: n_requests
    iteration_requests: list[int] = field(default_factory=list)
    max_prompts: int | None = None  # cap on prompts kept per iteration
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 24
    first_line_only: bool = True  # keep the first non-empty line of what the writer wrote
    min_chars: int = 5
    max_chars: int = 60
    max_rouge_l: float = 0.99  # drop near-duplicates of seed or earlier prompts; >= 1 disables
    banned_keywords: list[str] = field(default_factory=list)


@dataclass
class GenerationConfig:
    """The engine every stage generates with, and candidate sampling."""

    backend: str = "hf"  # hf | vllm (vllm must import: scripts/install_vllm_cpu.sh on a CPU machine)
    batch_size: int = 64  # sequences per generate() call (hf)
    n_candidates: int = 8  # the paper's 4 at 0.7 gave mostly identical samples (conf/generation/default.yaml)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    vllm: VLLMSettings = field(default_factory=VLLMSettings)  # used with backend=vllm


@dataclass
class JudgeConfig:
    """LLM-as-a-Judge: the template, how many judgments per candidate and how to read them. The
    model learns to judge with these (EFT), is measured with them, and ``reward=self_judge`` (the
    method) scores the candidates with them."""

    template: str = "judge_additive_small"
    # The A/B template for pairwise judging (position bias, head-to-head); a built-in name or a path.
    pairwise_template: str = "judge_pairwise"
    # sample: the mean of `repeats` sampled judgments that parse. expected: one greedy judgment,
    # scored by the expected value of the judge's probabilities over the score tokens.
    mode: str = "sample"
    repeats: int = 3  # sampled judgments per candidate; the score is the mean of those that parse
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 48
    min_score: int = 0
    max_score: int = 5
    # mode=sample: a judgment without a readable score (it stopped before its Score: line, or was
    # cut at max_new_tokens) gets the score the judge itself finds most likely after its Score:
    # (one appended when it has none; selfreward.judge.score_prefix), instead of being dropped.
    # false: such a judgment is dropped (the paper).
    complete_score: bool = False
    # mode=sample: a judgment that ended (its own end of turn) without a readable score is
    # continued from where it stopped, the end of turn barred from its first new token, up to
    # this many times, until a score reads (selfreward.judge.continue_unscored); before
    # complete_score. 0: not continued (the paper).
    continue_unscored: int = 0


@dataclass
class PairsConfig:
    """How judged candidates become preference pairs."""

    # best_worst: highest vs lowest score (the paper). all_pairs: every two distinct answers whose
    # scores differ by more than min_margin, the higher one chosen. length_control: Meta-Rewarding's
    # rule, the shortest of the top answers vs the longest of the bottom ones (rho below).
    # random: a control, chosen and rejected drawn at random.
    method: str = "best_worst"
    min_margin: float = 0.0  # drop pairs whose score margin is not above this (0 drops ties)
    # length_control only: chosen = the shortest answer scored >= (1-rho)*max + rho*min, rejected =
    # the longest scored <= (1-rho)*min + rho*max; rho=0 is best_worst with length tie-breaks.
    rho: float = 0.0
    # best_worst only: which of equally scored answers is chosen/rejected. first: the first sampled
    # (as before). frequent: the most often sampled of them (chosen and rejected alike).
    tie_break: str = "first"
    # best_worst only: drop a prompt whose top score is shared by several distinct answers (the
    # judge did not pick a best one; on a task with one right answer it passed a wrong one).
    unique_best: bool = False
    # best_worst only: keep a prompt's pair only when its chosen answer is also its most often
    # sampled one (the judge agrees with the policy's majority vote).
    majority_agrees: bool = False
    # best_worst only: keep a prompt's pair only when its chosen answer is at least this share of
    # the prompt's scored candidates (how sure the policy's own vote is; 0: off).
    min_vote_share: float = 0.0
    # With majority_agrees: keep a prompt whose chosen answer is not the most sampled one after all
    # when the judge scores the most sampled answer below this value, as the pair (the judge's
    # pick, the majority answer): the judge overrules a majority it finds wrong (0: off).
    overrule_majority_below: float = 0.0
    # The last iteration (1 makes M2) in which overrule_majority_below applies; 0: every iteration.
    overrule_until_iteration: int = 0
    # An answer whose mean score is below this takes no part in the pairs (neither chosen nor
    # rejected, nor counted in the vote); null: every scored answer does (the paper).
    min_score: float | None = None
    # A candidate cut at generation.max_new_tokens (finished: false) is left out of the pairs
    # unless this is true: a truncated answer is neither a fair winner nor a fair loser.
    allow_truncated: bool = False


@dataclass
class SFTConfig:
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    epochs: float = 2.0
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    max_length: int = 256
    # Batches of rows of about one length (the Trainer's LengthGroupedSampler: shuffled groups of
    # up to 50 batches, each sorted by length): less padding, so faster where lengths differ
    # (scripts/bench_training.py), but a batch then holds rows of one kind. In M1's SFT on the
    # built-in world that wrecks the model (experiment=judge_overrule, seed 102: SFT about 1.4x
    # faster, sampled accuracy 0.024 against 0.704; docs/results.md, "Batches grouped by length";
    # our reading, not measured: its lr-1e-3 SFT chases each batch of one task and size).
    # false: batches drawn at random (the Trainer's default).
    group_by_length: bool = False
    # Each batch (as drawn, at random or not) run in this many passes of its rows sorted by
    # length, each pass padded to its own longest row: the same loss and gradients up to float
    # rounding, less padding (on M1's rows of experiment=judge_fast, a batch's padded tokens 0.86
    # of one pass's with 2; its SFT under two processes 1.08x faster, docs/results.md, "The
    # speed-ups"). 1: one pass, TRL's own.
    length_buckets: int = 1


@dataclass
class DPOConfig:
    beta: float = 0.1
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    epochs: float = 2.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    max_length: int = 256
    loss_type: str = "sigmoid"
    # Weight of an NLL (SFT) loss on the chosen answers added to the DPO loss (as in RPO,
    # Pang et al. 2024); 0 is plain DPO, the paper's choice.
    sft_weight: float = 0.0
    reference: str = "previous"  # previous: M_t (the paper); sft: M1 for every iteration
    # TRL's precompute_ref_log_probs: the reference model's log-probabilities of every pair are
    # computed once before training, so that training holds one model (a 70B DPO: not two copies).
    precompute_ref_log_probs: bool = False
    # As SFTConfig.group_by_length, for DPO's pairs (each padded to its prompt and longer answer).
    # On experiment=judge_overrule's DPO alone (validation seeds 100-103): DPO about 1.4x faster
    # in the first round, M3 - M1 +10.65 against +11.90 (the second round loses), judge level:
    # below the rule set beforehand, so off in every file (docs/results.md, "DPO grouped by
    # length on validation seeds 100 and 101").
    group_by_length: bool = False
    # The last iteration (1 makes M2) whose DPO group_by_length applies to; later ones draw their
    # batches at random. 0: every iteration. Grouped in the first round only, the four validation
    # seeds above gained +10.35 (random +11.90, grouped in both +10.65): the loss comes from the
    # grouped first round, though its M2s are level (docs/results.md, "Grouped DPO in the first
    # round only"); not used by any file.
    group_by_length_until_iteration: int = 0
    # Epochs of iteration 1's DPO, iteration 2's, ... (a float as ``epochs``); iterations past the
    # list's end, or all of them with an empty list, train ``epochs``. The first round's DPO is the
    # loop's most expensive stage after M1's SFT (docs/results.md, "Two DPO epochs in the first
    # round only").
    iteration_epochs: list[float] = field(default_factory=list)
    # Pairs with the chosen answer on both sides (training.eft_pairs_anchors, eft_pairs_push=false)
    # train only the NLL term (the preference term is a constant there): true skips their rejected
    # and reference passes, in any batch and under several processes. The same loss and gradients
    # as TRL's up to float rounding, so a run differs from false's only as far as rounding
    # carries; false (TRL's own loss on every row) keeps the runs made before it reproducible.
    # Only with loss_type sigmoid and sft_weight > 0.
    nll_only_shortcut: bool = False


@dataclass
class LoraSettings:
    """LoRA adapters through peft for SFT and DPO (TRL's ``peft_config``). The adapters are
    merged into the weights before saving, so every later stage loads a plain model; with
    ``dpo.reference=previous`` DPO's reference is the adapter-free model (no second copy)."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # or module names: q_proj, v_proj...


@dataclass
class TrainingConfig:
    # The built-in world's recipe (conf/training/tiny.yaml says why): 4 epochs, DPO + NLL.
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(epochs=4.0))
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(epochs=4.0, sft_weight=3.0))
    # dpo: each iteration trains on the pairs (the method). sft_best: SFT on the chosen answers
    # alone, no rejected ones (the paper's negative ablation), with the settings in sft_best.
    # rft: rejection-sampling fine-tuning, SFT on every distinct candidate the judge gave the
    # top score (judge.max_score), with the settings in rft; with reward=oracle these are
    # the samples the oracle marks correct (ReST-EM / RAFT, the simplest baseline that works).
    objective: str = "dpo"
    sft_best: SFTConfig = field(default_factory=lambda: SFTConfig(learning_rate=1e-4, batch_size=16))
    rft: SFTConfig = field(default_factory=lambda: SFTConfig(learning_rate=3e-4, batch_size=16, epochs=4.0))
    # M1's SFT sees each EFT row this many times an epoch (the IFT rows once): more judge training
    # without more answer training. The built-in model learns the verification trace's lookups
    # only after about 12 epochs on its EFT rows; 10 epochs on them alone wipe out its answers
    # (docs/results.md). 1: every row once (the paper's single SFT).
    sft_judge_repeats: int = 1
    # Iteration t (M_t -> M_{t+1}) trains at its stage's learning rate times this to the power t-1
    # (dpo, sft_best or rft; not M1's SFT): 1 keeps one rate for every round (the paper); below 1,
    # later rounds, whose model is sharper and whose pairs are fewer, move it less.
    iteration_lr_decay: float = 1.0
    # After each round's training (dpo, sft_best or rft), M_{t+1} is fine-tuned on this many seed
    # EFT rows drawn afresh each round (SFT with the settings in eft_replay): the judging M1 was
    # taught, which training on answers alone wears away. 0: no replay (the paper).
    eft_replay_rows: int = 0
    # Each round, M_t also judges this many seed EFT rows (drawn afresh each round), one judgment
    # each with the judge's settings; where its score differs from the seed row's, the pair (the
    # seed judgment, its own) on the filled judge prompt joins the round's DPO pairs
    # (m<t+1>/eft_pairs.jsonl, written by the judge_pairs stage): the judge is trained on the
    # seed judging data where it now errs, inside the round's DPO. 0: none (the paper).
    eft_pairs_rows: int = 0
    # Iteration t judges eft_pairs_rows x eft_pairs_rows_decay^(t-1) rows (rounded): 1, every round
    # alike; 0, the first round only.
    eft_pairs_rows_decay: float = 1.0
    # false: each judgment pair trains only its seed judgment, through DPO's NLL term
    # (training.dpo.sft_weight), with no push against M_t's own judgment (its rejected side is the
    # seed judgment again, so the preference term's gradient is zero). On the built-in world it
    # left the swing of the judge's verdicts that the judgment pairs cause as it was (after the
    # first round M2 says "exact no" to nearly every right answer either way; docs/results.md):
    # the swing comes from which rows are trained, see eft_pairs_anchors.
    eft_pairs_push: bool = True
    # Per judgment pair, this many of the judged rows where M_t's score was the seed's (as many as
    # there are) join the round's DPO as their seed judgment on both sides: trained by DPO's NLL
    # term only. The rows where the judge errs are mostly of one verdict (M1's: a lenient "exact
    # yes"), and training on them alone moved that verdict everywhere, with or without the push
    # (docs/results.md). 0: none.
    eft_pairs_anchors: float = 0.0
    # Rehearsal of M_t's own work in its round (self-synthesised rehearsal, Huang et al. 2024,
    # arXiv 2403.01244): this many rows, a third each of the prompts it wrote that the loop kept
    # (request -> prompt), its judgments of the round's chosen and rejected answers (filled judge
    # template -> judgment) and the chosen answers (prompt -> answer), fine-tuned into M_{t+1} after
    # the round's training with the settings in eft_replay (with eft_replay_rows, in the same SFT).
    # DPO on answers alone wears away prompt writing and judging, which the next round needs; no
    # label comes from outside the model. 0: no rehearsal (the paper).
    self_replay_rows: int = 0
    # Which of those kinds the rehearsal draws, an equal share each (the first named takes the
    # remainder): prompts, judgments, answers. With prompts.writer=m1 the round's prompts come
    # from M1, so M_{t+1} need not keep writing them.
    self_replay_kinds: list[str] = field(default_factory=lambda: ["prompts", "judgments", "answers"])
    eft_replay: SFTConfig = field(default_factory=lambda: SFTConfig(learning_rate=1e-4, epochs=1.0))
    activation_checkpointing: bool = False  # trade compute for memory on large models
    # True for settings made for the built-in tiny model (SFT lr 1e-3): a pretrained model
    # refuses them (selfreward/models.py). conf/training/real.yaml and paper.yaml set false.
    builtin_only: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    logging_steps: int = 10
    dataloader_num_workers: int = 0
    # Under several processes (DDP): the size of the gradient buckets DDP all-reduces, in MB (null:
    # PyTorch's 25). On GPUs several buckets let the all-reduce overlap the backward pass
    # (conf/training/real.yaml and paper.yaml: null); on CPU cores that every process already
    # fills, the all-reduce thread competes with the backward pass instead, and one bucket for the
    # whole built-in model (3.6 MB of gradients) sends it once, after the backward (docs/results.md,
    # "Two processes that wait less"). The same sums, so the same weights.
    ddp_bucket_cap_mb: int | None = 100
    # Under several CPU processes on one machine (gloo): DDP's gradient buckets summed through
    # shared memory instead of gloo's TCP loopback, and the gradients kept in the buckets
    # (gradient_as_bucket_view) instead of copied in and out
    # (selfreward.distributed.SharedMemoryAllReduce; docs/results.md, "Gradients through shared
    # memory"). For two processes the same sums to the last bit. Ignored on GPUs (NCCL) and across
    # machines.
    ddp_shared_memory: bool = True


@dataclass
class EvaluationConfig:
    """Measurements of each model M_t on the held-out sets."""

    sampled_temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 32
    judge_repeats: int | None = None  # null = judge.repeats
    # Measure position bias with judge.pairwise_template, both orders, on up to `pairwise_pairs`
    # held-out pairs of different gold quality.
    position_bias: bool = False
    pairwise_pairs: int = 200
    pairwise_max_new_tokens: int = 128
    # Best-of-N and Worst-of-N by the configured reward (off by default: it samples
    # max(best_of_n_sizes) answers per held-out prompt and scores them all). The oracle accuracy of
    # the answer picked is bon/<reward>/oracle_accuracy@N and won/<reward>/oracle_accuracy@N.
    best_of_n: bool = False
    best_of_n_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])


@dataclass
class RewardShapingConfig:
    """InfAlign's CTRL (Balashankar et al. 2024) around any reward source: each candidate's reward
    becomes its quantile among ``k`` samples of M_t for the same prompt (scored by the same reward),
    then ``sign(t) * exp(t * quantile)``; t > 0 aims at Best-of-N decoding, t < 0 at Worst-of-N."""

    method: str = "none"  # none: the reward as it is; ctrl: calibrate and transform
    k: int = 16  # reference samples of M_t per prompt (generation settings)
    t: float = 1.0  # the transform's temperature: > 0 for Best-of-N, < 0 for Worst-of-N


@dataclass
class MetaJudgeConfig:
    """Meta-Rewarding (Wu et al. 2024): M_t compares two of its own judgments of a candidate
    (selfreward/meta_judge.py); the preferred judgment becomes a DPO pair for the judging skill,
    trained together with the response pairs. Needs reward=self_judge with sampled judgments."""

    enabled: bool = False
    template: str = "meta_judge_small"  # built-in name or a file with {prompt} {response} {judgment_a} {judgment_b}
    max_responses: int = 400  # contested candidates meta-judged per iteration (a seeded sample)
    max_new_tokens: int = 8


@dataclass
class LoggerConfig:
    backend: str = "none"  # none | wandb; metrics.jsonl is always written
    project: str = "selfreward"
    entity: str | None = None
    mode: str = "offline"  # offline needs no account; online | offline | disabled
    sample_pairs: int = 16  # rows of the W&B table of sample pairs per iteration
    report_training: bool = True  # also send TRL's training curves to W&B


@dataclass
class Config:
    experiment_name: str = "default"
    seed: int = 0
    iterations: int = 2  # self-rewarding rounds after SFT: 2 gives M1 -> M2 -> M3
    threads: int | None = None  # torch CPU threads; null leaves torch's default
    # Processes the loop runs in on this machine: above 1, `selfreward` launches itself that many
    # times under `accelerate launch` (conf/accelerate/ddp.yml; selfreward.cli). Generation is
    # split between them, so the sampled files depend on it: a resume must use the same count.
    processes: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # Where the candidates' scores come from: a function named by Hydra's _target_ and its
    # parameters (conf/reward/, selfreward/rewards/). The default is the method: M_t judges itself.
    reward: dict[str, Any] = field(default_factory=lambda: {"_target_": "selfreward.rewards.self_judge.score"})
    reward_shaping: RewardShapingConfig = field(default_factory=RewardShapingConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    meta_judge: MetaJudgeConfig = field(default_factory=MetaJudgeConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_configs() -> None:
    """Register the schema so that ``conf/config.yaml`` can start from ``base_config``, and the
    ``${seeds:NAME}`` resolver: the folder of a seed set shipped in ``selfreward/seeds/``."""
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("seeds", lambda name: str(Path(__file__).parent / "seeds" / name), replace=True)


# --- Checks: every value, before any stage runs ------------------------------------------------
#
# Where defaults live: the schema above is the one source of truth for every key. `selfreward
# recipe=none` runs exactly its values; the default option of each group (conf/<group>/<default>.yaml)
# repeats them to say why they were chosen, and tests/test_config.py fails if a file and the schema
# disagree. Other options (training=paper, ...) hold what they change. Plain `selfreward` adds the
# built-in world's tuned recipe, one file on top of them all (conf/recipe/builtin.yaml).
#
# validate() below is the one place that checks values: the CLI calls it before Hydra writes
# anything into the run directory, and loop.run calls it again for configs built in Python.


class ConfigError(SelfRewardError):
    """A config value that cannot work; the CLI prints it as one line and exits with code 2."""


# Keys with a fixed set of values.
CHOICES = {
    "data.source": tuple(SOURCES),
    "generation.backend": ("hf", "vllm"),
    "judge.mode": ("sample", "expected"),
    "reward_shaping.method": ("none", "ctrl"),
    "pairs.method": PAIR_METHODS,
    "pairs.tie_break": TIE_BREAKS,
    "training.objective": ("dpo", "sft_best", "rft"),
    "training.dpo.reference": ("previous", "sft"),
    # TRL 1.16's DPO losses (DPOConfig.loss_type); "sft" is added by training.dpo.sft_weight.
    "training.dpo.loss_type": ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                               "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop",
                               "sigmoid_norm"),
    "logger.backend": ("none", "wandb"),
    "logger.mode": ("online", "offline", "disabled"),
}


def _rule(test: Callable[[Any], bool], allowed: str, optional: bool = False) -> tuple:
    """A range check: ``test`` on a finite number (or None where ``optional``) and its description."""
    def check(value) -> bool:
        if value is None:
            return optional
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return test(value)
    return check, f"null or {allowed}" if optional else allowed


def _int_at_least(low: int, why: str = "", optional: bool = False) -> tuple:
    return _rule(lambda v: v >= low, f"an integer >= {low}{why}", optional)


_POSITIVE = _rule(lambda v: v > 0, "a number > 0")
_NOT_NEGATIVE = _rule(lambda v: v >= 0, "a number >= 0")
_TOP_P = _rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
_TEMPERATURE = _rule(lambda v: v >= 0, "a number >= 0 (0 is greedy)")


def _trainer_ranges(prefix: str) -> dict:
    return {
        f"{prefix}.learning_rate": _POSITIVE,
        f"{prefix}.warmup_ratio": _rule(lambda v: 0 <= v < 1, "a number in [0, 1) (a share of the steps)"),
        f"{prefix}.epochs": _POSITIVE,
        f"{prefix}.batch_size": _int_at_least(1),
        f"{prefix}.gradient_accumulation_steps": _int_at_least(1),
        f"{prefix}.weight_decay": _NOT_NEGATIVE,
        f"{prefix}.max_length": _int_at_least(8, " (tokens of prompt and answer together)"),
    }


def _sft_ranges(prefix: str) -> dict:
    return {**_trainer_ranges(prefix), f"{prefix}.length_buckets": _int_at_least(1, " (1: one pass per batch)")}


# What training.self_replay_rows can rehearse (selfreward/loop.py self_replay_examples), in draw order.
SELF_REPLAY_KINDS = ("prompts", "judgments", "answers")

# Numeric keys and their allowed values. A key not named here is free (seed) or checked below.
RANGES = {
    "iterations": _int_at_least(0),
    "threads": _int_at_least(1, optional=True),
    "processes": _int_at_least(1),
    "model.vocab_size": _int_at_least(16),
    "model.hidden_size": _int_at_least(1),
    "model.num_layers": _int_at_least(1),
    "model.num_heads": _int_at_least(1),
    "model.intermediate_size": _int_at_least(1),
    "model.max_position_embeddings": _int_at_least(16),
    "data.max_ift": _int_at_least(1, optional=True),
    "data.max_eft": _int_at_least(1, optional=True),
    "data.max_eval_prompts": _int_at_least(1, optional=True),
    "data.max_judge_eval": _int_at_least(1, optional=True),
    "data.oasst.n_eval": _int_at_least(1),
    "data.oasst.n_judge_eval": _int_at_least(1),
    "data.oasst.keep_most_common": _POSITIVE,
    "prompts.shots": _int_at_least(1),
    "prompts.n_requests": _int_at_least(1),
    "prompts.max_prompts": _int_at_least(1, optional=True),
    "prompts.temperature": _TEMPERATURE,
    "prompts.top_p": _TOP_P,
    "prompts.max_new_tokens": _int_at_least(1),
    "prompts.min_chars": _int_at_least(0),
    "prompts.max_chars": _int_at_least(1),
    "prompts.max_rouge_l": _rule(lambda v: v >= 0, "a number >= 0 (1 or more turns the filter off)"),
    "generation.batch_size": _int_at_least(1),
    "generation.n_candidates": _int_at_least(2, " (a preference pair needs two candidates)"),
    "generation.temperature": _TEMPERATURE,
    "generation.top_p": _TOP_P,
    "generation.max_new_tokens": _int_at_least(1),
    "judge.repeats": _int_at_least(1),
    "judge.temperature": _TEMPERATURE,
    "judge.top_p": _TOP_P,
    "judge.max_new_tokens": _int_at_least(1),
    "judge.continue_unscored": _int_at_least(0, " (0: off)"),
    "meta_judge.max_responses": _int_at_least(1),
    "meta_judge.max_new_tokens": _int_at_least(1),
    "reward_shaping.k": _int_at_least(1),
    "reward_shaping.t": _rule(lambda v: v != 0, "a nonzero number (> 0 for Best-of-N, < 0 for Worst-of-N)"),
    "pairs.min_margin": _NOT_NEGATIVE,
    "pairs.rho": _rule(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "pairs.min_vote_share": _rule(lambda v: 0 <= v <= 1, "a number in [0, 1] (0: off)"),
    "pairs.overrule_majority_below": _rule(lambda v: v >= 0, "a number >= 0 (0: off)"),
    "pairs.overrule_until_iteration": _int_at_least(0, " (0: every iteration)"),
    "training.dpo.group_by_length_until_iteration": _int_at_least(0, " (0: every iteration)"),
    **_sft_ranges("training.sft"),
    **_trainer_ranges("training.dpo"),
    **_sft_ranges("training.sft_best"),
    **_sft_ranges("training.rft"),
    **_sft_ranges("training.eft_replay"),
    "training.dpo.beta": _rule(lambda v: v > 0, "a number > 0 (at 0 DPO cannot learn)"),
    "training.dpo.sft_weight": _NOT_NEGATIVE,
    "training.sft_judge_repeats": _int_at_least(1),
    "training.eft_replay_rows": _int_at_least(0),
    "training.eft_pairs_rows": _int_at_least(0),
    "training.eft_pairs_anchors": _NOT_NEGATIVE,
    "training.eft_pairs_rows_decay": _rule(lambda v: 0 <= v <= 1, "a number in [0, 1] (1: every round alike, 0: the first only)"),
    "training.self_replay_rows": _int_at_least(0),
    "training.iteration_lr_decay": _rule(lambda v: 0 < v <= 1, "a number in (0, 1] (1: every round alike)"),
    "training.logging_steps": _int_at_least(1),
    "training.dataloader_num_workers": _int_at_least(0),
    "training.ddp_bucket_cap_mb": _int_at_least(1, optional=True),
    "evaluation.sampled_temperature": _TEMPERATURE,
    "evaluation.top_p": _TOP_P,
    "evaluation.max_new_tokens": _int_at_least(1),
    "evaluation.judge_repeats": _int_at_least(1, optional=True),
    "evaluation.pairwise_pairs": _int_at_least(1),
    "evaluation.pairwise_max_new_tokens": _int_at_least(1),
    "logger.sample_pairs": _int_at_least(0),
}

# The fields each kind of template must contain.
TEMPLATE_FIELDS = {
    "judge.template": ("prompt", "response"),
    "judge.pairwise_template": ("prompt", "response_a", "response_b"),
    "prompts.template": ("examples",),
    "meta_judge.template": ("prompt", "response", "judgment_a", "judgment_b"),
}


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"invalid config: {key}={value!r}; allowed: {allowed}")


def validate(cfg) -> None:
    """Check a composed config: no unknown keys, values of the right type, every value in its
    range (:data:`CHOICES`, :data:`RANGES` and the rules between keys below), and the files the
    config names (templates, data folder, local model folders) present and usable.

    Raises :class:`ConfigError` with one line naming the key, the value and what is allowed.
    Hydra's struct mode already rejects a misspelt override; this also catches keys added with
    ``+key=value`` and configs built by hand (in tests or notebooks).
    """
    def unknown(schema, node, prefix=""):
        for key, value in node.items():
            if key not in schema:
                yield prefix + str(key)
            elif prefix + str(key) == "reward":
                continue  # the keys of the reward are its function's parameters (check_reward)
            elif isinstance(value, dict) and isinstance(schema[key], dict):
                yield from unknown(schema[key], value, f"{prefix}{key}.")

    schema = OmegaConf.structured(Config)
    extra = list(unknown(OmegaConf.to_container(schema), OmegaConf.to_container(cfg, resolve=False)))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ConfigError(f"invalid config: unknown key {extra[0]!r}{more}")
    try:
        OmegaConf.merge(schema, cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]} (key: {e.full_key})") from None
    try:
        values = {key: OmegaConf.select(cfg, key, throw_on_missing=True) for key in [*CHOICES, *RANGES]}
    except MissingMandatoryValue as e:
        raise ConfigError(f"invalid config: {e.full_key} is not set") from None
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            raise _fail(key, values[key], f"one of {', '.join(allowed)}")
    for key, (check, allowed) in RANGES.items():
        if not check(values[key]):
            raise _fail(key, values[key], allowed)
    from selfreward.rewards import check_reward

    check_reward(cfg)  # the reward's parameters, and what it asks of the rest (an oracle, a model)
    _check_rules(cfg)
    _check_files(cfg)


def _check_rules(cfg) -> None:
    """Rules between keys, and keys whose values a library defines."""
    import torch
    from transformers import SchedulerType

    from selfreward.generation import check_backend

    check_backend(cfg.generation)  # backend=vllm: vllm imports here, its settings are in range
    j, m = cfg.judge, cfg.model
    if j.min_score >= j.max_score:
        raise ConfigError(f"invalid config: judge.min_score={j.min_score}, judge.max_score={j.max_score}; "
                          f"allowed: min_score < max_score")
    if cfg.pairs.tie_break != "first" and cfg.pairs.method != "best_worst":
        raise ConfigError(f"invalid config: pairs.tie_break={cfg.pairs.tie_break} with pairs.method="
                          f"{cfg.pairs.method}; allowed: tie_break=first (only best_worst has this rule)")
    for name in ("unique_best", "majority_agrees"):
        if getattr(cfg.pairs, name) and cfg.pairs.method != "best_worst":
            raise ConfigError(f"invalid config: pairs.{name}=true with pairs.method={cfg.pairs.method}; "
                              f"allowed: {name}=false (only best_worst has this rule)")
    if cfg.pairs.min_vote_share and cfg.pairs.method != "best_worst":
        raise ConfigError(f"invalid config: pairs.min_vote_share={cfg.pairs.min_vote_share} with pairs.method="
                          f"{cfg.pairs.method}; allowed: min_vote_share=0 (only best_worst has this rule)")
    if cfg.pairs.overrule_majority_below and not cfg.pairs.majority_agrees:
        raise ConfigError(f"invalid config: pairs.overrule_majority_below={cfg.pairs.overrule_majority_below} with "
                          f"pairs.majority_agrees=false; allowed: overrule_majority_below=0, or majority_agrees=true "
                          f"(it is an exception to that rule)")
    if cfg.prompts.min_chars > cfg.prompts.max_chars:
        raise ConfigError(f"invalid config: prompts.min_chars={cfg.prompts.min_chars}, prompts.max_chars="
                          f"{cfg.prompts.max_chars}; allowed: min_chars <= max_chars")
    kinds = list(cfg.training.self_replay_kinds)
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(SELF_REPLAY_KINDS):
        raise _fail("training.self_replay_kinds", kinds,
                    f"a non-empty list of distinct kinds from {', '.join(SELF_REPLAY_KINDS)}")
    requests = list(cfg.prompts.iteration_requests)
    if any(n < 1 for n in requests):  # the schema's list[int] has made them integers
        raise _fail("prompts.iteration_requests", requests, "a list of integers >= 1 (empty: n_requests in every iteration)")
    epochs = list(cfg.training.dpo.iteration_epochs)
    if any(not math.isfinite(e) or e <= 0 for e in epochs):  # the schema's list[float] has made them floats
        raise _fail("training.dpo.iteration_epochs", epochs, "a list of numbers > 0 (empty: epochs in every iteration)")
    sizes = list(cfg.evaluation.best_of_n_sizes)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise _fail("evaluation.best_of_n_sizes", sizes, "a non-empty list of integers >= 1")
    schedulers = [s.value for s in SchedulerType]
    for key in ("training.sft", "training.dpo", "training.sft_best", "training.rft"):
        value = OmegaConf.select(cfg, f"{key}.lr_scheduler_type")
        if value not in schedulers:
            raise _fail(f"{key}.lr_scheduler_type", value, f"one of {', '.join(schedulers)}")
    if m.dtype != "auto" and not isinstance(getattr(torch, m.dtype, None), torch.dtype):
        raise _fail("model.dtype", m.dtype, "auto or a torch dtype such as float32, bfloat16, float16")
    if m.device != "auto":
        try:
            torch.device(m.device)
        except RuntimeError:
            raise _fail("model.device", m.device, "auto or a torch device such as cpu, cuda, cuda:1") from None
    for kind in ("phrase", "trace"):
        if getattr(m, f"{kind}_tokens") and m.name_or_path != "builtin":
            raise ConfigError(f"invalid config: model.{kind}_tokens=true with model.name_or_path={m.name_or_path!r}; "
                              f"allowed: {kind} tokens only for the built-in model, whose tokenizer is built here "
                              f"(the built-in recipe sets them: add recipe=none for other models)")
    if m.trace_tokens and not cfg.data.world.judge_trace:
        raise ConfigError("invalid config: model.trace_tokens=true with data.world.judge_trace=false; allowed: "
                          "trace tokens only with the judge's verification trace (experiment=judge_trace sets it)")
    if m.name_or_path == "builtin" and m.hidden_size % m.num_heads:
        raise ConfigError(f"invalid config: model.hidden_size={m.hidden_size}, model.num_heads={m.num_heads}; "
                          f"allowed: hidden_size a multiple of num_heads")
    # Rejection sampling keeps the candidates scored judge.max_score: shaped scores, and rewards on
    # other scales (log-probabilities, vote shares, a reward model's logits), would keep none.
    if cfg.training.objective == "rft":
        target = str(OmegaConf.select(cfg, "reward._target_", default=""))
        other_scale = [n for n in ("likelihood", "self_consistency", "reward_model")
                       if target == f"selfreward.rewards.{n}.score"]
        if cfg.reward_shaping.method != "none":
            raise ConfigError(f"invalid config: training.objective=rft with reward_shaping.method="
                              f"{cfg.reward_shaping.method}; allowed: rft keeps candidates at judge.max_score, so it "
                              f"needs the reward unshaped (reward_shaping=none)")
        if other_scale:
            raise ConfigError(f"invalid config: training.objective=rft with reward={other_scale[0]}; allowed: rft "
                              f"keeps candidates at judge.max_score, so it needs a reward on the judge's scale "
                              f"(self_judge, oracle, teacher, constitution)")
    if cfg.judge.continue_unscored and cfg.judge.mode != "sample":
        raise ConfigError(f"invalid config: judge.continue_unscored={cfg.judge.continue_unscored} with judge.mode="
                          f"{cfg.judge.mode}; allowed: judge.mode=sample (mode=expected reads every score)")
    if cfg.meta_judge.enabled:
        target = str(OmegaConf.select(cfg, "reward._target_", default=""))
        if target != "selfreward.rewards.self_judge.score":
            raise ConfigError(f"invalid config: meta_judge.enabled=true with reward._target_={target}; allowed: "
                              f"reward=self_judge (the meta-judge compares M_t's own judgments of its candidates)")
        if cfg.judge.mode != "sample" or cfg.judge.repeats < 2:
            raise ConfigError(f"invalid config: meta_judge.enabled=true with judge.mode={cfg.judge.mode}, "
                              f"judge.repeats={cfg.judge.repeats}; allowed: judge.mode=sample and judge.repeats >= 2 "
                              f"(the meta-judge needs two judgments of a candidate to compare)")
        if cfg.training.objective != "dpo":
            raise ConfigError(f"invalid config: meta_judge.enabled=true with training.objective="
                              f"{cfg.training.objective}; allowed: dpo (judgment pairs are preference pairs)")
    if cfg.training.eft_pairs_rows:
        if cfg.judge.mode != "sample":
            raise ConfigError(f"invalid config: training.eft_pairs_rows={cfg.training.eft_pairs_rows} with judge.mode="
                              f"{cfg.judge.mode}; allowed: judge.mode=sample (a judgment's own score is compared "
                              f"with the seed row's)")
        if cfg.training.objective != "dpo":
            raise ConfigError(f"invalid config: training.eft_pairs_rows={cfg.training.eft_pairs_rows} with "
                              f"training.objective={cfg.training.objective}; allowed: dpo (judgment pairs are "
                              f"preference pairs)")
        if cfg.training.eft_pairs_anchors and not cfg.training.dpo.sft_weight:
            raise ConfigError(f"invalid config: training.eft_pairs_anchors={cfg.training.eft_pairs_anchors} with "
                              f"training.dpo.sft_weight=0; the anchors would train nothing: set "
                              f"training.dpo.sft_weight above 0 (they are trained by DPO's NLL term)")
        if not cfg.training.eft_pairs_push and not cfg.training.dpo.sft_weight:
            raise ConfigError("invalid config: training.eft_pairs_push=false with training.dpo.sft_weight=0; the "
                              "judgment pairs would train nothing: set training.dpo.sft_weight above 0 (their seed "
                              "judgments are trained by DPO's NLL term) or training.eft_pairs_push=true")
    dpo = cfg.training.dpo
    if dpo.group_by_length_until_iteration and not dpo.group_by_length:
        raise ConfigError(f"invalid config: training.dpo.group_by_length_until_iteration="
                          f"{dpo.group_by_length_until_iteration} with training.dpo.group_by_length=false; it would "
                          f"change nothing: set training.dpo.group_by_length=true or leave it at 0")
    if dpo.nll_only_shortcut and (dpo.loss_type != "sigmoid" or not dpo.sft_weight):
        raise ConfigError(f"invalid config: training.dpo.nll_only_shortcut=true with training.dpo.loss_type="
                          f"{dpo.loss_type} and training.dpo.sft_weight={dpo.sft_weight}; allowed: loss_type sigmoid "
                          f"with sft_weight above 0 (the shortcut is for rows that only DPO's NLL term trains)")
    # The data source checks its own keys, and what the model and judge ask of it.
    from selfreward.data import check_source

    check_source(cfg)


def _check_files(cfg) -> None:
    """The files the config names: templates with their fields, local models (the data folder is
    the data source's: :func:`selfreward.data.check_source`)."""
    for key, fields in TEMPLATE_FIELDS.items():
        if key == "judge.pairwise_template" and not cfg.evaluation.position_bias:
            continue  # read only by the position-bias measurement (and by scripts, which check it)
        if key == "meta_judge.template" and not cfg.meta_judge.enabled:
            continue
        name = OmegaConf.select(cfg, key)
        check_template(key, name, fields)
    if cfg.model.name_or_path != "builtin":
        from selfreward.models import check_training

        check_model_folder("model.name_or_path", cfg.model.name_or_path, cfg.model.trust_remote_code,
                           tokenizer=cfg.model.tokenizer is None)
        check_training(cfg)  # a pretrained model refuses the tiny model's training settings
        if cfg.model.tokenizer is not None:
            check_tokenizer("model.tokenizer", cfg.model.tokenizer, cfg.model.trust_remote_code)
    if cfg.prompts.writer not in ("current", "m1"):
        check_model_folder("prompts.writer", cfg.prompts.writer, cfg.model.trust_remote_code)


def check_template(key: str, name: str, fields: tuple[str, ...]) -> None:
    """The template ``name`` (built-in or a file) loads and holds every ``{field}``; a
    :class:`ConfigError` naming ``key`` otherwise."""
    from selfreward.prompts import load_template

    try:
        text = load_template(name)
    except SelfRewardError as e:
        raise ConfigError(f"invalid config: {key}={name!r}: {e}") from None
    missing = [f for f in fields if "{" + f + "}" not in text]
    if missing:
        raise ConfigError(f"invalid config: {key}={name!r}: the template has no {{{missing[0]}}} field; "
                          f"allowed: a template with {', '.join('{' + f + '}' for f in fields)}")


def _is_local(path: str) -> bool:
    """A path on this machine (as opposed to a Hugging Face hub id, which is not checked here)."""
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


# Files that hold a model's weights, in the formats from_pretrained reads (a LoRA adapter included).
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
                "adapter_model.safetensors", "adapter_model.bin")


def check_model_folder(key: str, path: str, trust_remote_code: bool = False, *, tokenizer: bool = True) -> None:
    """A local model folder has a config, weights and (when ``tokenizer``) a tokenizer that loads."""
    if not _is_local(path):
        return
    folder = Path(path).expanduser()
    if not folder.is_dir():
        from selfreward.models import prepare_hint

        hint = prepare_hint(path)
        raise ConfigError(f"invalid config: {key}={path!r}: no such folder" + (f"; make it with: {hint}" if hint else ""))
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"invalid config: {key}={path!r}: not a model folder (no config.json)")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ConfigError(f"invalid config: {key}={path!r}: the folder has no weights "
                          f"(model.safetensors or pytorch_model.bin)")
    if tokenizer:
        check_tokenizer(key, path, trust_remote_code)


def check_tokenizer(key: str, path: str, trust_remote_code: bool = False) -> None:
    """A local tokenizer loads (whatever the reason it does not, in one line)."""
    if not _is_local(path):
        return
    from transformers import AutoTokenizer

    if not Path(path).expanduser().is_dir():
        raise ConfigError(f"invalid config: {key}={path!r}: no such folder")
    try:
        AutoTokenizer.from_pretrained(str(Path(path).expanduser()), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any failure of a user's tokenizer files is reported the same way
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"invalid config: {key}={path!r}: the tokenizer cannot be loaded ({first})") from None
