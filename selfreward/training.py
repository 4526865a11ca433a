"""Training stages through TRL: SFT (seed data -> M1) and DPO (M_t -> M_{t+1}).

Both read a model from a folder and write the trained model (safetensors) into a new
folder; the loop marks the stage done only after the folder is in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset

from selfreward.generation import load_model, load_tokenizer
from selfreward.rundir import SelfRewardError, fresh_dir, replace_dir, write_jsonl

log = logging.getLogger(__name__)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _trainer_args(stage_cfg, training_cfg, output_dir: Path, seed: int, report_to: str, run_name: str) -> dict:
    """Arguments shared by SFTConfig and DPOConfig."""
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir),
        run_name=run_name,
        learning_rate=stage_cfg.learning_rate,
        lr_scheduler_type=stage_cfg.lr_scheduler_type,
        warmup_steps=stage_cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        num_train_epochs=stage_cfg.epochs,
        per_device_train_batch_size=stage_cfg.batch_size,
        gradient_accumulation_steps=stage_cfg.gradient_accumulation_steps,
        weight_decay=stage_cfg.weight_decay,
        max_length=stage_cfg.max_length,
        activation_checkpointing=training_cfg.activation_checkpointing,
        logging_steps=training_cfg.logging_steps,
        dataloader_num_workers=training_cfg.dataloader_num_workers,
        save_strategy="no",
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        disable_tqdm=False,
    )


def _save(trainer, tokenizer, tmp_dir: Path, out_dir: Path, stage_dir: Path) -> dict:
    """Write the trained model whole, then move it into place; keep the loss curve."""
    trainer.save_model(str(tmp_dir))
    tokenizer.save_pretrained(str(tmp_dir))
    (tmp_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.yaml says it all
    replace_dir(tmp_dir, out_dir)
    history = trainer.state.log_history
    write_jsonl(stage_dir / "training_log.jsonl", history)
    final = history[-1] if history else {}
    return {"train_loss": final.get("train_loss"), "steps": trainer.state.global_step}


def train_sft(
    model_path: str, examples: list[dict], out_dir: Path, cfg, *, seed: int, tokenizer_path: str | None = None,
    stage_cfg=None, report_to: str = "none", run_name: str = "sft",
) -> dict:
    """Supervised fine-tuning on ``[{"prompt", "completion"}]`` with TRL's SFTTrainer.

    The loss covers the completion only; prompt and completion are formatted with the
    tokenizer's chat template, the same one generation uses. ``stage_cfg`` defaults to
    ``cfg.training.sft``.
    """
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise SelfRewardError("SFT has no examples: the seed IFT and EFT data are empty")
    out_dir = Path(out_dir)
    work = fresh_dir(out_dir.with_name(out_dir.name + ".tmp"))
    tokenizer = load_tokenizer(tokenizer_path or model_path, cfg.model.chat_template, cfg.model.trust_remote_code)
    model = load_model(model_path, dtype=cfg.model.dtype, device=cfg.model.device,
                       attn_implementation=cfg.model.attn_implementation,
                       trust_remote_code=cfg.model.trust_remote_code)
    dataset = Dataset.from_list(
        [{"prompt": _user(e["prompt"]), "completion": _assistant(e["completion"])} for e in examples]
    )
    args = SFTConfig(
        **_trainer_args(stage_cfg or cfg.training.sft, cfg.training, work, seed, report_to, run_name),
        completion_only_loss=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return _save(trainer, tokenizer, work, out_dir, out_dir.parent)


def train_dpo(
    model_path: str, ref_path: str, pairs: list[dict], out_dir: Path, cfg, *, seed: int,
    report_to: str = "none", run_name: str = "dpo",
) -> dict:
    """DPO with TRL's DPOTrainer, initialised from ``model_path`` against the reference in ``ref_path``."""
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise SelfRewardError("DPO has no preference pairs")
    out_dir = Path(out_dir)
    work = fresh_dir(out_dir.with_name(out_dir.name + ".tmp"))
    tokenizer = load_tokenizer(model_path, cfg.model.chat_template, cfg.model.trust_remote_code)
    load = dict(dtype=cfg.model.dtype, device=cfg.model.device, attn_implementation=cfg.model.attn_implementation,
                trust_remote_code=cfg.model.trust_remote_code)
    model = load_model(model_path, **load)
    ref_model = load_model(ref_path, **load)
    dataset = Dataset.from_list(
        [{"prompt": _user(p["prompt"]), "chosen": _assistant(p["chosen"]), "rejected": _assistant(p["rejected"])}
         for p in pairs]
    )
    dpo = cfg.training.dpo
    args = DPOConfig(
        **_trainer_args(dpo, cfg.training, work, seed, report_to, run_name),
        beta=dpo.beta,
        loss_type=[dpo.loss_type, "sft"] if dpo.sft_weight else [dpo.loss_type],
        loss_weights=[1.0, dpo.sft_weight] if dpo.sft_weight else None,
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.train()
    return _save(trainer, tokenizer, work, out_dir, out_dir.parent)
