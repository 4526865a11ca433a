"""Training stages through TRL: SFT (seed data -> M1) and DPO (M_t -> M_{t+1}).

Both read a model from a folder and write the trained model (safetensors) into a new
folder; the loop marks the stage done only after the folder is in place.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from accelerate.utils import DistributedDataParallelKwargs
from transformers import TrainerCallback

from selfreward import chat, distributed
from selfreward.generation import load_model, load_tokenizer, resolve_device, resolve_dtype
from selfreward.rundir import SelfRewardError, fresh_dir, replace_dir, write_jsonl

log = logging.getLogger(__name__)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _precision(model_cfg) -> dict:
    """Mixed precision for the trainer. The weights being trained are always float32 (see
    :func:`_load_for_training`); ``model.dtype`` bfloat16/float16 on a GPU becomes autocast to it,
    so a small update (lr 1e-6) is added to float32 weights instead of being rounded away."""
    device = resolve_device(model_cfg.device)
    dtype = resolve_dtype(model_cfg.dtype, device)
    cuda = device.type == "cuda"
    return dict(use_cpu=not cuda, bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16)


def _load_for_training(path: str, cfg):
    """The model to train, in float32 whatever ``model.dtype`` says (that applies to generation)."""
    return load_model(path, dtype="float32", device=cfg.model.device, attn_implementation=cfg.model.attn_implementation,
                      trust_remote_code=cfg.model.trust_remote_code)


def _peft_config(lora):
    """peft's LoraConfig from ``training.lora``, or None when LoRA is off."""
    if not lora.enabled:
        return None
    from peft import LoraConfig

    targets = list(lora.target_modules)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                      target_modules="all-linear" if targets == ["all-linear"] else targets)


def _trainer_args(stage_cfg, training_cfg, model_cfg, output_dir: Path, seed: int, report_to: str,
                  run_name: str, lr_scale: float = 1.0, group_by_length: bool | None = None,
                  epochs: float | None = None) -> dict:
    """Arguments shared by SFTConfig and DPOConfig. The stage's ``batch_size`` is that of all
    processes together (:func:`selfreward.distributed.batch_args`); its learning rate is scaled
    by ``lr_scale`` (the loop's per-iteration decay, :func:`iteration_lr_scale`); its batches are
    grouped by length as ``group_by_length`` says (None: the stage's own ``group_by_length``);
    it trains ``epochs`` epochs (None: the stage's own ``epochs``)."""
    if group_by_length is None:
        group_by_length = stage_cfg.group_by_length
    return dict(
        output_dir=str(output_dir),
        run_name=run_name,
        learning_rate=stage_cfg.learning_rate * lr_scale,
        lr_scheduler_type=stage_cfg.lr_scheduler_type,
        warmup_steps=stage_cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        num_train_epochs=stage_cfg.epochs if epochs is None else epochs,
        **distributed.batch_args(stage_cfg.batch_size, f"the batch_size of training stage {run_name}"),
        gradient_accumulation_steps=stage_cfg.gradient_accumulation_steps,
        weight_decay=stage_cfg.weight_decay,
        max_length=stage_cfg.max_length,
        activation_checkpointing=training_cfg.activation_checkpointing,
        logging_steps=training_cfg.logging_steps,
        dataloader_num_workers=training_cfg.dataloader_num_workers,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        save_strategy="no",
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        **_precision(model_cfg),
        disable_tqdm=False,
        # Under DDP: every parameter of a causal LM takes part in each step, so the search for
        # unused ones (the Trainer's default without activation checkpointing) is a wasted
        # traversal of the graph at every step.
        ddp_find_unused_parameters=False,
        ddp_bucket_cap_mb=training_cfg.ddp_bucket_cap_mb,
    )


def dpo_groups_by_length(dpo_cfg, t: int) -> bool:
    """Whether iteration ``t``'s DPO batches its rows by length: ``training.dpo.group_by_length``,
    up to iteration ``group_by_length_until_iteration`` (0: in every iteration)."""
    until = dpo_cfg.group_by_length_until_iteration
    return bool(dpo_cfg.group_by_length) and (until == 0 or t <= until)


def iteration_value(per_iteration, t: int, default):
    """Iteration ``t``'s value of a per-iteration list setting: its ``t``-th entry where the list
    reaches that far, else ``default`` (iterations are numbered from 1)."""
    if t < 1:
        raise ValueError(f"iterations are numbered from 1, got {t}")
    per_iteration = list(per_iteration)
    return per_iteration[t - 1] if t <= len(per_iteration) else default


def dpo_epochs(dpo_cfg, t: int) -> float:
    """The epochs of iteration ``t``'s DPO: ``training.dpo.iteration_epochs[t-1]`` where the list
    reaches that far, else ``training.dpo.epochs``."""
    return float(iteration_value(dpo_cfg.iteration_epochs, t, dpo_cfg.epochs))


def iteration_lr_scale(training_cfg, t: int) -> float:
    """The factor on the learning rate of iteration ``t`` (M_t -> M_{t+1}, t >= 1):
    ``training.iteration_lr_decay`` to the power t-1, so the first iteration trains at the
    configured rate."""
    if t < 1:
        raise ValueError(f"iterations are numbered from 1, got {t}")
    return training_cfg.iteration_lr_decay ** (t - 1)


def _sharded(trainer) -> bool:
    """Whether the trained weights are split over the processes (DeepSpeed ZeRO-3 or FSDP)."""
    return distributed.active() and (trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled)


def _check_sharding(trainer, run_name: str) -> None:
    """Stop where the launch asked for sharded training that accelerate does not do (FSDP or
    DeepSpeed without GPUs: accelerate then trains with plain DDP), or for LoRA with it."""
    for name, env, enabled in (("FSDP", "ACCELERATE_USE_FSDP", trainer.is_fsdp_enabled),
                               ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", trainer.is_deepspeed_enabled)):
        if os.environ.get(env, "false").lower() == "true" and not enabled:
            raise SelfRewardError(f"{run_name}: the launch asks for {name} ({env}=true), which accelerate runs on "
                                  f"GPUs only; here it would train with plain DDP: launch with "
                                  f"conf/accelerate/ddp.yml instead")
    if _sharded(trainer) and hasattr(trainer.model, "merge_and_unload"):
        raise SelfRewardError(f"{run_name}: training.lora.enabled=true with DeepSpeed or FSDP is not supported here "
                              f"(its adapters cannot be merged into sharded weights); use DDP "
                              f"(conf/accelerate/ddp.yml) or training.lora.enabled=false")


def _save(trainer, tokenizer, tmp_dir: Path, out_dir: Path, stage_dir: Path,
          log_name: str = "training_log.jsonl") -> dict:
    """Write the trained model whole (LoRA adapters merged in, the chat format's stop tokens in
    its generation config), then move it into place; keep the loss curve. Under a launch of
    several processes the main one writes (with ZeRO-3 or FSDP, the weights gathered onto it)."""
    model = trainer.model
    # A collective: every process takes part, the main one gets the full weights.
    saved = {"state_dict": trainer.accelerator.get_state_dict(trainer.model_wrapped)} if _sharded(trainer) else {}
    if distributed.is_main():
        if hasattr(model, "merge_and_unload"):  # a peft model: later stages load a plain one
            model = model.merge_and_unload()
        chat.save_format(model, tokenizer)
        model.save_pretrained(str(tmp_dir), **saved)
        tokenizer.save_pretrained(str(tmp_dir))
        (tmp_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.yaml says it all
        shutil.rmtree(tmp_dir / REF_LOGPS_DIR, ignore_errors=True)
    replace_dir(tmp_dir, out_dir)
    history = trainer.state.log_history
    if distributed.active():
        # Each process's Trainer reports the mean loss of its own share: the mean over the
        # processes is the one process's figure (equal shares). Every process takes part.
        losses = [x for x in distributed.gather(history[-1].get("train_loss") if history else None) if x is not None]
        if history and "train_loss" in history[-1] and losses:
            history[-1] = {**history[-1], "train_loss": sum(losses) / len(losses)}
    write_jsonl(stage_dir / log_name, history)
    final = history[-1] if history else {}
    return {"train_loss": final.get("train_loss"), "steps": trainer.state.global_step}


def end_labels_at_end_of_turn(dataset: Dataset, end_of_turn: int | None) -> Dataset:
    """Cut each tokenized answer right after its first end-of-turn token.

    TRL trains on everything the chat template writes after the prompt; ChatML writes a newline
    after ``<|im_end|>``, which would be trained although generation stops before it. After the
    cut the last trained token of every answer is the one generation stops at (nothing changes
    for templates that end the turn with it, such as the built-in one). An answer cut short by
    ``max_length`` has no end-of-turn token and is left as it is.
    """
    if end_of_turn is None:
        return dataset

    def cut(ids: list[int], start: int = 0) -> int:
        return ids.index(end_of_turn, start) + 1 if end_of_turn in ids[start:] else len(ids)

    if "labels" in dataset.column_names:  # SFT: input_ids with the prompt's labels at -100
        def fn(ex):
            start = next((i for i, label in enumerate(ex["labels"]) if label != -100), len(ex["labels"]))
            end = cut(ex["input_ids"], start)
            return {"input_ids": ex["input_ids"][:end], "labels": ex["labels"][:end]}
    else:  # DPO: prompt_ids, chosen_ids, rejected_ids
        def fn(ex):
            return {k: ex[k][: cut(ex[k])] for k in ("chosen_ids", "rejected_ids")}
    return dataset.map(fn, desc="End answers at the end-of-turn token")


def row_lengths(dataset: Dataset) -> list[int]:
    """The padded length each row of a tokenized dataset needs in a batch: SFT, its tokens; DPO,
    its prompt and its longer answer."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    return [len(p) + max(len(c), len(r))
            for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])]


class _LengthGrouped:
    """For TRL's trainers: with ``train_sampling_strategy="group_by_length"`` the sampler takes each
    row's length from ``row_lengths``. The Trainer's own sampler reads ``input_ids`` from the
    dataset left after dropping the columns the model does not take, and DPO rows have none."""

    row_lengths: list[int] | None = None

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length" or self.row_lengths is None:
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=self.row_lengths)


class _MetricsGatheredAtLog:
    """For TRL's trainers under several processes: TRL gathers every metric from all processes as
    it computes it (SFT four collectives a pass, DPO fifteen a step), and each collective waits in
    the middle of the step for the slower process. In training each process keeps its own values
    instead (:func:`_local_gathers` around the loss) and the metrics' lists are gathered once per
    log (:meth:`log`): a logged metric is the mean of the processes' own per-step values (for TRL's
    means over rows, the same number when the processes have as many rows; for its token ratios,
    such as ``entropy`` and ``mean_token_accuracy``, the mean of the processes' ratios) and
    ``num_tokens`` their sum. The loss and the gradients do not change. No library offers this:
    TRL's metrics are computed inside its loss."""

    def log(self, logs, start_time=None):
        if distributed.active():
            everyone = distributed.gather({mode: dict(metrics) for mode, metrics in self._metrics.items()})
            for mode, metrics in self._metrics.items():
                for key in {k for one in everyone for k in one.get(mode, {})}:
                    values = [v for one in everyone for v in one.get(mode, {}).get(key, [])]
                    metrics[key] = [sum(values)] if key == "num_tokens" else values
        return super().log(logs, start_time)


class _SharedMemoryGradients:
    """For TRL's trainers: with ``shared_memory_gradients`` (``training.ddp_shared_memory``) and
    several CPU processes on one machine, DDP keeps the gradients in its buckets
    (``gradient_as_bucket_view``) and sums them through shared memory
    (:class:`selfreward.distributed.SharedMemoryAllReduce`, registered on the DDP wrapper before
    its first step) instead of gloo. Elsewhere (one process, GPUs, several machines) the
    Trainer's DDP as it is."""

    shared_memory_gradients = False

    def _uses_shared_memory(self) -> bool:
        return self.shared_memory_gradients and _cpu_processes_on_one_machine()

    def _build_accelerator_args(self, **kwargs):
        args = super()._build_accelerator_args(**kwargs)
        if self._uses_shared_memory():
            for handler in args["kwargs_handlers"]:
                if isinstance(handler, DistributedDataParallelKwargs):
                    handler.gradient_as_bucket_view = True
        return args

    def training_step(self, model, *args, **kwargs):
        # accelerate registers only its own hooks, by name, so this one is registered here, on
        # the wrapper the Trainer passes, before its first backward.
        # The cheap test first: this runs at every step, the hook is registered once.
        if (isinstance(model, torch.nn.parallel.DistributedDataParallel)
                and not getattr(model, "_selfreward_shared_memory", False) and self._uses_shared_memory()):
            model._selfreward_shared_memory = True
            if all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad):
                model.register_comm_hook(None, distributed.SharedMemoryAllReduce().hook)
            else:  # the hook sums float32 buffers; gloo takes the others
                log.info("training.ddp_shared_memory: gradients not all float32, summed by gloo")
        return super().training_step(model, *args, **kwargs)


def _cpu_processes_on_one_machine() -> bool:
    if not distributed.active() or torch.cuda.is_available():
        return False
    import torch.distributed as dist

    world = distributed.world_size()
    return dist.get_backend() == "gloo" and int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world


@contextlib.contextmanager
def _local_gathers(accelerator, local: bool):
    """Within it, where ``local`` and under several processes, ``accelerator.gather`` and
    ``gather_for_metrics`` return this process's own tensor (see :class:`_MetricsGatheredAtLog`)."""
    if not (local and distributed.active()):
        yield
        return
    accelerator.gather = lambda tensor: tensor
    accelerator.gather_for_metrics = lambda tensor, use_gather_object=False: tensor
    try:
        yield
    finally:
        del accelerator.gather, accelerator.gather_for_metrics


def sft_trainer(model, tokenizer, examples: list[dict], args, *, peft_config=None, length_buckets_per_batch: int = 1,
                shared_memory_gradients: bool = False):
    """TRL's SFTTrainer on ``[{"prompt", "completion"}]`` as one-turn conversations, each answer's
    labels ending at the chat format's end-of-turn token; each batch run in
    ``length_buckets_per_batch`` passes (``training.sft.length_buckets``); gradients through
    shared memory as ``shared_memory_gradients`` says (``training.ddp_shared_memory``)."""
    from trl import SFTTrainer

    class LengthGroupedSFTTrainer(_SharedMemoryGradients, _MetricsGatheredAtLog, _LengthGrouped, SFTTrainer):
        length_buckets = 1  # training.sft.length_buckets

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """TRL's loss, the batch in ``length_buckets`` passes of its rows sorted by length, each
            padded to its own longest row (:func:`length_buckets`). With the batch's count of
            trained tokens (``num_items_in_batch``, which the Trainer passes) TRL's loss is a sum
            over tokens divided by it, so the passes' losses add up to the batch's. The passes after
            the first run the module itself (no DDP wrapper: their gradients join the same
            backward, and DDP's hooks are on the parameters); TRL's metrics are logged per pass.
            No library offers this: TRL's padding-free batches need flash attention."""
            parts = None
            if self.length_buckets > 1 and not return_outputs and num_items_in_batch is not None:
                parts = length_buckets(inputs, self.length_buckets)
            with _local_gathers(self.accelerator, model.training):
                if parts is None:
                    return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                module = self.accelerator.unwrap_model(model)
                return sum(super(LengthGroupedSFTTrainer, self).compute_loss(model if i == 0 else module, part, False,
                                                                            num_items_in_batch)
                           for i, part in enumerate(parts))

    dataset = Dataset.from_list(
        [{"prompt": _user(e["prompt"]), "completion": _assistant(e["completion"])} for e in examples]
    )
    LengthGroupedSFTTrainer.shared_memory_gradients = shared_memory_gradients
    trainer = LengthGroupedSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                      peft_config=peft_config)
    trainer.length_buckets = length_buckets_per_batch
    trainer.train_dataset = end_labels_at_end_of_turn(trainer.train_dataset, chat.end_of_turn_id(tokenizer))
    if args.train_sampling_strategy == "group_by_length":
        trainer.row_lengths = row_lengths(trainer.train_dataset)
    return trainer


REF_LOGPS_DIR = "ref_logps"  # in the model's work folder, under several processes (removed before saving)


def _dpo_trainer_class():
    from trl import DPOTrainer

    class EndOfTurnDPOTrainer(_SharedMemoryGradients, _MetricsGatheredAtLog, _LengthGrouped, DPOTrainer):
        """TRL's DPOTrainer whose precomputed reference log-probabilities
        (``precompute_ref_log_probs``, computed in its constructor) cover the answers as they are
        trained: cut at the end-of-turn token (:func:`end_labels_at_end_of_turn`). With
        ``nll_only_shortcut`` (``training.dpo.nll_only_shortcut``), rows with the chosen answer on
        both sides skip their dead passes (:meth:`_loss_with_nll_only_rows`)."""

        nll_only_shortcut = False

        def _precompute_ref_logps(self, dataset, name, batch_size):
            dataset = end_labels_at_end_of_turn(dataset, chat.end_of_turn_id(self.processing_class))
            if distributed.active():
                # TRL caches the log-probs next to the dataset, written by the first process and
                # read by all; an in-memory dataset's cache is in a temporary folder of each
                # process's own, so the dataset goes to a folder they share (removed by _save).
                shared = Path(self.args.output_dir) / REF_LOGPS_DIR / name
                if distributed.is_main():
                    dataset.save_to_disk(str(shared))
                distributed.barrier()
                dataset = Dataset.load_from_disk(str(shared))
            return super()._precompute_ref_logps(dataset, name, batch_size)

        def _compute_loss(self, model, inputs, return_outputs):
            with _local_gathers(self.accelerator, model.training):
                return self._loss_of_batch(model, inputs, return_outputs)

        def _loss_of_batch(self, model, inputs, return_outputs):
            same = None if return_outputs or not _can_skip_nll_only_passes(self) else _nll_only_rows(inputs)
            if same is None:
                return super()._compute_loss(model, inputs, return_outputs)
            full = ~same  # the rows TRL runs (both sides, reference, metrics): the real pairs
            if distributed.active() and not full.any():
                # Every process runs TRL's loss on one row at least: through the DDP wrapper, whose
                # forward each process's backward needs (and outside training TRL's metrics are
                # collectives).
                full[same.nonzero()[0, 0]] = True
            # Outside training TRL gathers one value per row it ran for its metrics, and accelerate's
            # gather needs as many rows on every process; here each process runs its own real pairs.
            with _ragged_gathers(self.accelerator, not model.training):
                if full.all():
                    loss, extra_tokens = super()._compute_loss(model, inputs, False), 0
                else:
                    loss, extra_tokens = self._loss_with_nll_only_rows(model, inputs, ~full)
            if model.training:
                # TRL counts the tokens of the rows it ran (each process its own in training, summed
                # at the log); the NLL-only rows too.
                self._total_train_tokens += extra_tokens // self._tp_size
            return loss

        def _loss_with_nll_only_rows(self, model, inputs, short):
            """TRL's loss for ``["sigmoid", "sft"]`` on a batch where the pairs marked ``short``
            have their chosen answer on both sides (``training.eft_pairs_anchors``,
            ``eft_pairs_push=false``), with fewer passes, and the number of tokens those rows ran.
            Such a pair's preference term is -log sigmoid(0), a constant without gradient, so only
            its chosen side is run (for the NLL term): no rejected or reference pass. TRL runs the
            other rows (and logs its metrics from them) with its terms reweighted from its rows and
            their chosen tokens to the batch's; the short rows' chosen sides add theirs in one pass
            of the module itself (no DDP wrapper: their gradients join the same backward, and DDP's
            hooks are on the parameters). Same loss and gradients as TRL's; no library offers this
            (TRL runs every row on both sides)."""
            n_rows = short.numel()
            full = ~short
            n_full = int(full.sum())
            w_pref, w_nll = self.loss_weights
            chosen = {k: inputs[k].chunk(2)[0] for k in _PAIR_KEYS}
            full_tokens = int(chosen["completion_mask"][full][:, 1:].sum())
            ids, attention, completion = _trim_right_padding(
                *(chosen[k][short] for k in ("input_ids", "attention_mask", "completion_mask")))
            shift = completion[:, 1:].bool()
            tokens = full_tokens + int(shift.sum())  # the NLL term's mean is over all chosen tokens
            loss = w_pref * math.log(2.0) * (n_rows - n_full) / n_rows
            if n_full:
                sub = {k: (v[full] if v.size(0) == n_rows else torch.cat([h[full] for h in v.chunk(2)]))
                       for k, v in inputs.items()}
                sub["input_ids"], sub["attention_mask"], sub["completion_mask"] = _trim_right_padding(
                    sub["input_ids"], sub["attention_mask"], sub["completion_mask"])
                weights = self.loss_weights
                # TRL averages each term over the rows and tokens it is given: reweighted to the batch.
                self.loss_weights = [w_pref * n_full / n_rows, w_nll * full_tokens / tokens]
                try:
                    loss = loss + super()._compute_loss(model, sub, False)
                finally:
                    self.loss_weights = weights
            labels = ids.masked_fill(completion == 0, -100)
            out = self.accelerator.unwrap_model(model)(input_ids=ids, attention_mask=attention, labels=labels,
                                                       use_cache=False, fused_lm_head=True)
            logps = out.log_probs[:, -shift.size(1):]
            return loss - w_nll * logps[shift].sum() / tokens, int(attention.sum())

    return EndOfTurnDPOTrainer


# Batch keys _nll_only_rows knows how to split: DPO's collated pairs (chosen rows, then rejected
# rows) and the precomputed reference log-probs (one per pair).
_PAIR_KEYS = {"input_ids", "attention_mask", "completion_mask"}
_REF_KEYS = {"ref_chosen_logps", "ref_rejected_logps"}


def _can_skip_nll_only_passes(trainer) -> bool:
    """Whether the trainer's loss lets rows with the chosen answer on both sides skip passes
    (``EndOfTurnDPOTrainer._loss_with_nll_only_rows``): its ``nll_only_shortcut`` on
    (``training.dpo.nll_only_shortcut``) and loss ``["sigmoid", "sft"]`` with TRL's plain
    reverse-KL DPO. The same on every process."""
    return (trainer.nll_only_shortcut and list(trainer.loss_types) == ["sigmoid", "sft"]
            and trainer.ld_alpha is None and not trainer.use_weighting and not trainer.aux_loss_enabled
            and trainer.f_divergence_type == "reverse_kl")


def _nll_only_rows(inputs) -> torch.Tensor | None:
    """Per pair of a DPO batch, whether its rejected side is its chosen side (a row trained by the
    NLL term only); None when the batch has keys this cannot split."""
    if not set(inputs) <= _PAIR_KEYS | _REF_KEYS or not _PAIR_KEYS <= set(inputs):
        return None
    same = torch.ones(inputs["input_ids"].size(0) // 2, dtype=torch.bool, device=inputs["input_ids"].device)
    for k in _PAIR_KEYS:
        chosen, rejected = inputs[k].chunk(2)
        same &= (chosen == rejected).all(dim=1)
    return same


@contextlib.contextmanager
def _ragged_gathers(accelerator, ragged: bool = True):
    """Within it, where ``ragged`` and under several processes, ``accelerator.gather`` takes tensors
    whose first dimension differs between processes: each padded to the longest, gathered, and cut
    back to its own length (in process order). Every process must enter it at the same points,
    since it gathers the lengths first."""
    if not (ragged and distributed.active()):
        yield
        return
    gather = type(accelerator).gather.__get__(accelerator)

    def ragged(tensor):
        if tensor.dim() == 0:
            return gather(tensor)
        sizes = gather(torch.tensor([tensor.size(0)], device=tensor.device)).tolist()
        longest = max(sizes)
        padded = torch.cat([tensor, tensor.new_zeros((longest - tensor.size(0), *tensor.shape[1:]))])
        parts = gather(padded).split(longest)
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    accelerator.gather = ragged
    try:
        yield
    finally:
        del accelerator.gather


def length_buckets(inputs: dict, n: int) -> list[dict] | None:
    """A batch of rows (every value a tensor of rows by positions, ``attention_mask`` among them)
    as ``n`` batches of its rows sorted by length, nearly equal in rows, each without the columns
    at its end that are padding in all its rows; None when it has fewer than ``n`` rows or other
    values."""
    attention = inputs.get("attention_mask")
    if (attention is None or attention.size(0) < n
            or any(not torch.is_tensor(v) or v.shape != attention.shape for v in inputs.values())):
        return None
    order = torch.argsort(attention.sum(dim=1), stable=True)
    parts = []
    for rows in torch.tensor_split(order, n):
        width = _used_width(attention[rows])
        parts.append({k: v[rows, :width] for k, v in inputs.items()})
    return parts


def _trim_right_padding(ids, attention, completion):
    """The rows without the columns at their end that are padding in every row (a sub-batch keeps
    its batch's width): the same outputs for the tokens, fewer positions to run."""
    width = _used_width(attention)
    return ids[:, :width], attention[:, :width], completion[:, :width]


def _used_width(attention: torch.Tensor) -> int:
    """The columns up to the last one that is a token (not padding) in some row."""
    return int(attention.any(dim=0).nonzero().max()) + 1 if attention.any() else attention.size(1)


def dpo_trainer(model, ref_model, tokenizer, pairs: list[dict], args, *, peft_config=None,
                shared_memory_gradients: bool = False):
    """TRL's DPOTrainer on ``[{"prompt", "chosen", "rejected"}]`` as one-turn conversations, each
    answer ending at the chat format's end-of-turn token. ``ref_model=None`` with a
    ``peft_config`` makes the adapter-free policy the reference; with
    ``args.precompute_ref_log_probs`` and no ``peft_config``, the policy before training (its
    log-probabilities computed once, before training). Gradients through shared memory as
    ``shared_memory_gradients`` says (``training.ddp_shared_memory``)."""
    dataset = Dataset.from_list(
        [{"prompt": _user(p["prompt"]), "chosen": _assistant(p["chosen"]), "rejected": _assistant(p["rejected"])}
         for p in pairs]
    )
    trainer_class = _dpo_trainer_class()
    trainer_class.shared_memory_gradients = shared_memory_gradients
    trainer = trainer_class(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                            processing_class=tokenizer, peft_config=peft_config)
    trainer.train_dataset = end_labels_at_end_of_turn(trainer.train_dataset, chat.end_of_turn_id(tokenizer))
    if args.train_sampling_strategy == "group_by_length":
        trainer.row_lengths = row_lengths(trainer.train_dataset)
    return trainer


def train_sft(
    model_path: str, examples: list[dict], out_dir: Path, cfg, *, seed: int, tokenizer_path: str | None = None,
    stage_cfg=None, report_to: str = "none", run_name: str = "sft", lr_scale: float = 1.0,
    log_name: str = "training_log.jsonl",
) -> dict:
    """Supervised fine-tuning on ``[{"prompt", "completion"}]`` with TRL's SFTTrainer.

    The loss covers the completion only; prompt and completion are formatted with the
    tokenizer's chat template, the same one generation uses. ``stage_cfg`` defaults to
    ``cfg.training.sft``; its learning rate is scaled by ``lr_scale``. ``out_dir`` may be
    ``model_path`` itself (the model is read before the new one replaces it). The loss curve
    goes to ``log_name`` beside ``out_dir``.
    """
    from trl import SFTConfig

    if not examples:
        raise SelfRewardError("SFT has no examples: the seed IFT and EFT data are empty")
    out_dir = Path(out_dir)
    work = fresh_dir(out_dir.with_name(out_dir.name + ".tmp"))
    tokenizer = load_tokenizer(tokenizer_path or model_path, cfg.model.chat_template, cfg.model.trust_remote_code)
    model = _load_for_training(model_path, cfg)
    args = SFTConfig(
        **_trainer_args(stage_cfg or cfg.training.sft, cfg.training, cfg.model, work, seed, report_to, run_name,
                        lr_scale),
        completion_only_loss=True,
    )
    stage_cfg = stage_cfg or cfg.training.sft
    trainer = sft_trainer(model, tokenizer, examples, args, peft_config=_peft_config(cfg.training.lora),
                          length_buckets_per_batch=stage_cfg.length_buckets,
                          shared_memory_gradients=cfg.training.ddp_shared_memory)
    _check_sharding(trainer, run_name)
    trainer.add_callback(StopOnNonFiniteLoss(run_name))
    trainer.train()
    return _save(trainer, tokenizer, work, out_dir, out_dir.parent, log_name)


def train_dpo(
    model_path: str, ref_path: str, pairs: list[dict], out_dir: Path, cfg, *, seed: int,
    report_to: str = "none", run_name: str = "dpo", lr_scale: float = 1.0, group_by_length: bool | None = None,
    epochs: float | None = None,
) -> dict:
    """DPO with TRL's DPOTrainer, initialised from ``model_path`` against the reference in ``ref_path``,
    at ``training.dpo.learning_rate`` times ``lr_scale``, batches grouped by length as
    ``group_by_length`` says (None: ``training.dpo.group_by_length``; the loop passes
    :func:`dpo_groups_by_length` of its iteration), for ``epochs`` epochs (None:
    ``training.dpo.epochs``; the loop passes :func:`dpo_epochs` of its iteration)."""
    from trl import DPOConfig

    if not pairs:
        raise SelfRewardError("DPO has no preference pairs")
    out_dir = Path(out_dir)
    work = fresh_dir(out_dir.with_name(out_dir.name + ".tmp"))
    tokenizer = load_tokenizer(model_path, cfg.model.chat_template, cfg.model.trust_remote_code)
    model = _load_for_training(model_path, cfg)
    peft_config = _peft_config(cfg.training.lora)
    dpo = cfg.training.dpo
    precompute = bool(dpo.precompute_ref_log_probs)
    if peft_config is not None and ref_path == model_path:
        ref_model = None  # TRL then uses the policy with its adapters disabled: M_t itself
    elif precompute and ref_path == model_path:
        ref_model = None  # TRL computes the reference log-probs with the policy before it trains: M_t
    else:
        # Only evaluated, never updated: model.dtype is enough.
        ref_model = load_model(ref_path, dtype=cfg.model.dtype, device=cfg.model.device,
                               attn_implementation=cfg.model.attn_implementation,
                               trust_remote_code=cfg.model.trust_remote_code)
    args = DPOConfig(
        **_trainer_args(dpo, cfg.training, cfg.model, work, seed, report_to, run_name, lr_scale, group_by_length,
                        epochs),
        beta=dpo.beta,
        loss_type=[dpo.loss_type, "sft"] if dpo.sft_weight else [dpo.loss_type],
        loss_weights=[1.0, dpo.sft_weight] if dpo.sft_weight else None,
        **({"precompute_ref_log_probs": True} if precompute else {}),
    )
    trainer = dpo_trainer(model, ref_model, tokenizer, pairs, args, peft_config=peft_config,
                          shared_memory_gradients=cfg.training.ddp_shared_memory)
    trainer.nll_only_shortcut = bool(dpo.nll_only_shortcut)
    _check_sharding(trainer, run_name)
    if precompute:
        # The reference log-probs are in the dataset now: training holds one model, the policy.
        trainer.ref_model = ref_model = None
    trainer.add_callback(StopOnNonFiniteLoss(run_name))
    trainer.train()
    return _save(trainer, tokenizer, work, out_dir, out_dir.parent)


class StopOnNonFiniteLoss(TrainerCallback):
    """Stops a training stage at the first step whose loss is NaN or infinite, naming the step.

    The check is on the gradients before each optimizer step (a non-finite loss makes them
    non-finite, and the step would write NaN into every weight), and on each logged loss. The
    Trainer by default logs a non-finite loss as the running mean (``logging_nan_inf_filter``),
    which would hide it, so that filter is turned off. Under fp16 loss scaling, infinite
    gradients are routine (the scaler skips the step), so there only the logged loss counts.
    The error leaves the stage unfinished: nothing is saved and the previous model stays the
    latest finished one.
    """

    def __init__(self, stage: str):
        self.stage = stage

    def _stop(self, step: int, state, what: str) -> None:
        raise SelfRewardError(
            f"{self.stage}: the training loss is not finite at step {step} of {state.max_steps} ({what}); the stage "
            f"stopped and saved nothing (lower its learning rate, check the data, or use float32)"
        )

    def on_train_begin(self, args, state, control, **kwargs):
        args.logging_nan_inf_filter = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if args.fp16 or model is None:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            if not torch.isfinite(norm):
                self._stop(state.global_step + 1, state, f"gradient norm {norm.item()}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self._stop(state.global_step, state, f"loss {loss}")
