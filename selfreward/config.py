"""The configuration schema.

These dataclasses are registered in Hydra's ConfigStore as ``base_config``; ``conf/config.yaml``
starts from it and the YAML files of each group fill it in. Because the schema is structured, a
misspelt key or a value of the wrong type stops the run at start with Hydra's message naming
the key. One dataclass per config group, named like the group and the module that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hydra.core.config_store import ConfigStore

from selfreward.world import WorldConfig


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


@dataclass
class OasstConfig:
    """The paper's seed data from Open Assistant (selfreward/oasst.py)."""

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
    writer: str = "current"  # "current" = M_t; otherwise a model id/path used as a fixed prompt writer
    shots: int = 4  # k demonstrations drawn from the seed prompts for each request
    n_requests: int = 256  # prompts asked for per iteration (before filtering)
    max_prompts: int | None = None  # cap on prompts kept per iteration
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 24
    first_line_only: bool = True  # keep the first non-empty line of what the writer wrote
    min_chars: int = 5
    max_chars: int = 200
    max_rouge_l: float = 0.7  # drop near-duplicates of seed or earlier prompts; >= 1 disables
    banned_keywords: list[str] = field(default_factory=list)


@dataclass
class GenerationConfig:
    """The engine every stage generates with, and candidate sampling."""

    backend: str = "hf"
    batch_size: int = 64  # sequences per generate() call
    n_candidates: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 32


@dataclass
class JudgeConfig:
    """LLM-as-a-Judge: the template, how many judgments per candidate and how to read them."""

    template: str = "judge_additive_small"
    # The A/B template for pairwise judging (position bias, head-to-head); a built-in name or a path.
    pairwise_template: str = "judge_pairwise"
    # model: M_t judges itself (the method). oracle: the built-in world's oracle scores the
    # candidates instead, a control giving the upper bound of a perfect judge.
    source: str = "model"
    # sample: the mean of `repeats` sampled judgments that parse. expected: one greedy judgment,
    # scored by the expected value of the judge's probabilities over the score tokens.
    mode: str = "sample"
    repeats: int = 3  # sampled judgments per candidate; the score is the mean of those that parse
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 48
    min_score: int = 0
    max_score: int = 5


@dataclass
class PairsConfig:
    """How judged candidates become preference pairs."""

    method: str = "best_worst"  # best_worst | random (a control: chosen and rejected drawn at random)
    min_margin: float = 0.0  # drop pairs whose score margin is not above this (0 drops ties)


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


@dataclass
class TrainingConfig:
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    # dpo: each iteration trains on the pairs (the method). sft_best: SFT on the chosen answers
    # alone, no rejected ones (the paper's negative ablation), with the settings in sft_best.
    # rft: rejection-sampling fine-tuning, SFT on every distinct candidate the judge gave the
    # top score (judge.max_score), with the settings in rft; with judge.source=oracle these are
    # the samples the oracle marks correct (ReST-EM / RAFT, the simplest baseline that works).
    objective: str = "dpo"
    sft_best: SFTConfig = field(default_factory=lambda: SFTConfig(learning_rate=1e-4, batch_size=16))
    rft: SFTConfig = field(default_factory=lambda: SFTConfig(learning_rate=3e-4, batch_size=16))
    activation_checkpointing: bool = False  # trade compute for memory on large models
    logging_steps: int = 10
    dataloader_num_workers: int = 0


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
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_configs() -> None:
    """Register the schema so that ``conf/config.yaml`` can start from ``base_config``."""
    ConfigStore.instance().store(name="base_config", node=Config)


# Keys with a fixed set of values, checked at start so that a bad one never costs finished stages.
CHOICES = {
    "data.source": ("builtin", "files", "oasst"),
    "generation.backend": ("hf",),
    "judge.mode": ("sample", "expected"),
    "judge.source": ("model", "oracle"),
    "pairs.method": ("best_worst", "random"),
    "training.objective": ("dpo", "sft_best", "rft"),
    "training.dpo.reference": ("previous", "sft"),
    "logger.backend": ("none", "wandb"),
}


def validate(cfg) -> None:
    """Check a composed config against the schema: no unknown keys, values of the right type,
    and the keys of :data:`CHOICES` holding one of their values.

    Hydra's struct mode already rejects a misspelt override; this also catches keys added with
    ``+key=value`` and configs built by hand (in tests or notebooks).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from selfreward.rundir import SelfRewardError

    def unknown(schema, node, prefix=""):
        for key, value in node.items():
            if key not in schema:
                yield prefix + str(key)
            elif isinstance(value, dict) and isinstance(schema[key], dict):
                yield from unknown(schema[key], value, f"{prefix}{key}.")

    schema = OmegaConf.structured(Config)
    extra = list(unknown(OmegaConf.to_container(schema), OmegaConf.to_container(cfg, resolve=False)))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise SelfRewardError(f"invalid config: unknown key {extra[0]!r}{more}")
    try:
        OmegaConf.merge(schema, cfg)
    except OmegaConfBaseException as e:
        raise SelfRewardError(f"invalid config: {str(e).splitlines()[0]} (key: {e.full_key})") from None
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise SelfRewardError(f"invalid config: {key}={value!r}; choose one of {', '.join(allowed)}")
    if cfg.iterations < 0:
        raise SelfRewardError(f"invalid config: iterations must be >= 0, got {cfg.iterations}")
    if cfg.judge.mode == "sample" and cfg.judge.repeats < 1:
        raise SelfRewardError(f"invalid config: judge.repeats must be at least 1, got {cfg.judge.repeats}")
    if cfg.judge.source == "oracle" and cfg.data.source != "builtin":
        raise SelfRewardError("invalid config: judge.source=oracle needs data=builtin, the only world with an oracle")
