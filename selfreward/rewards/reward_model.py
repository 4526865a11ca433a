"""RLHF's reward model: a scalar head (sequence classification) on M1, trained once with TRL's
``RewardTrainer`` (Bradley-Terry loss) on preference pairs from the seed judging data, in the
stage ``m1/reward_model``; it then scores every iteration's candidates."""

from __future__ import annotations

from pathlib import Path

import torch

from selfreward.judge import parse_score
from selfreward.pairs import build_pairs
from selfreward.rewards import Context, Group, Scored, per_distinct
from selfreward.rundir import SelfRewardError, fresh_dir, read_jsonl, replace_dir, run_stage, write_jsonl


def preference_pairs(eft: list[dict], min_score: int, max_score: int) -> list[dict]:
    """``{"prompt", "chosen", "rejected"}`` for every two distinct answers to one prompt whose
    seed judgments (``Score: N``) differ, the higher-scored one chosen (the ``all_pairs`` rule of
    :func:`selfreward.pairs.build_pairs`); unparsed judgments skipped."""
    groups: dict[str, dict] = {}
    for row in eft:
        g = groups.setdefault(row["prompt"], {"prompt": row["prompt"], "responses": [], "scores": []})
        g["responses"].append(row["response"])
        g["scores"].append(parse_score(row["judgment"], min_score, max_score, row["response"]))
    pairs, _ = build_pairs(list(groups.values()), method="all_pairs")
    return [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]


def _conversation(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def train(ctx: Context, out_dir: Path, *, learning_rate: float, epochs: float, batch_size: int,
          max_length: int) -> dict:
    """Train the reward model from M1 on the seed preference pairs and save it in ``out_dir``."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    from selfreward.generation import load_tokenizer
    from selfreward.loop import stage_seed
    from selfreward.training import _precision

    cfg = ctx.cfg
    pairs = preference_pairs(ctx.data.eft, cfg.judge.min_score, cfg.judge.max_score)
    if not pairs:
        raise SelfRewardError("reward=reward_model: the seed judging data (eft.jsonl) has no prompt with two answers "
                              "scored differently, so there is no preference pair to train on")
    seed = stage_seed(cfg.seed, 1, "reward_model")
    m1 = str(Path(ctx.run_dir) / "m1" / "model")
    tokenizer = load_tokenizer(m1, cfg.model.chat_template, cfg.model.trust_remote_code)
    set_seed(seed)  # the new scalar head is drawn from this seed
    model = AutoModelForSequenceClassification.from_pretrained(m1, num_labels=1, dtype=torch.float32,
                                                               trust_remote_code=cfg.model.trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    # Conversational rows: TRL applies the chat template to prompt + answer, as scoring does below.
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                                  "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                  "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    tmp = fresh_dir(out_dir.parent / f".{out_dir.name}.tmp")
    args = RewardConfig(output_dir=str(tmp), learning_rate=learning_rate, num_train_epochs=epochs,
                        per_device_train_batch_size=batch_size, max_length=max_length, save_strategy="no",
                        report_to="none", seed=seed, data_seed=seed, logging_steps=cfg.training.logging_steps,
                        activation_checkpointing=cfg.training.activation_checkpointing,
                        **_precision(cfg.model), disable_tqdm=True)
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trainer.model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    replace_dir(tmp, out_dir)
    history = trainer.state.log_history
    write_jsonl(out_dir.parent / "reward_model_log.jsonl", history)
    final = [h for h in history if "accuracy" in h]
    return {"pairs": len(pairs), "steps": trainer.state.global_step,
            "train_loss": history[-1].get("train_loss") if history else None,
            "train_accuracy": final[-1]["accuracy"] if final else None}


@torch.inference_mode()
def rewards(folder: Path, items: list[tuple[str, str]], cfg) -> list[float]:
    """The reward model's scalar for each (prompt, response), one sequence at a time (no padding,
    so the head reads the sequence's true last token)."""
    from transformers import AutoModelForSequenceClassification

    from selfreward.generation import load_tokenizer, resolve_device

    tokenizer = load_tokenizer(str(folder), cfg.model.chat_template, cfg.model.trust_remote_code)
    device = resolve_device(cfg.model.device)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32,
                                                               trust_remote_code=cfg.model.trust_remote_code)
    model.to(device).eval()
    values = []
    for prompt, response in items:
        ids = tokenizer.apply_chat_template(_conversation(prompt, response), tokenize=True,
                                            return_dict=True)["input_ids"]
        values.append(model(input_ids=torch.tensor([ids], device=device)).logits[0, 0].item())
    return values


def score(groups: list[Group], ctx: Context, learning_rate: float = 1e-4, epochs: float = 3.0, batch_size: int = 16,
          max_length: int = 256) -> list[list[Scored]]:
    """The reward model's score of each distinct candidate; the model is trained on first use
    (stage ``m1/reward_model``, kept for every later iteration and on resume)."""
    folder = Path(ctx.run_dir) / "m1" / "reward_model"
    run_stage(Path(ctx.run_dir) / "m1", "reward_model", lambda: train(
        ctx, folder, learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, max_length=max_length))
    return per_distinct(groups, lambda items: [Scored(v) for v in rewards(folder, items, ctx.cfg)])


def check(cfg) -> None:
    """Training settings in range."""
    from selfreward.config import RANGES, ConfigError

    rules = {"learning_rate": RANGES["training.dpo.learning_rate"], "epochs": RANGES["training.dpo.epochs"],
             "batch_size": RANGES["training.dpo.batch_size"], "max_length": RANGES["training.dpo.max_length"]}
    for key, (test, allowed) in rules.items():
        if key in cfg.reward and not test(cfg.reward[key]):
            raise ConfigError(f"invalid config: reward.{key}={cfg.reward[key]!r}; allowed: {allowed}")
