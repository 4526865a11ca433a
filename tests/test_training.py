"""The training step, with perfect labels: the check that would have caught "the loop does not learn".

A small policy is fine-tuned on one task until it is right about a third of the time; its own
samples, labelled by the oracle, give best-vs-worst pairs; DPO with the default recipe
(``conf/training/tiny.yaml``) must then raise the chosen-over-rejected log-probability margin on
held-out pairs *and* keep (not lower) the policy's accuracy on held-out prompts. Plain DPO on
such near-miss pairs raises the margin by pushing both answers down, and the accuracy falls
(likelihood displacement); that is the failure this test is for.
"""

from __future__ import annotations

import copy
import random
import statistics

import pytest
import torch

from selfreward.generation import Sampling, load_engine
from selfreward.pairs import build_pairs
from selfreward.training import train_dpo, train_sft
from selfreward.data.builtin import (
    WorldConfig,
    _distinct_prompts,
    answer,
    build_base_model,
    build_tokenizer,
    build_world,
    is_correct,
    oracle_score,
    tokenizer_corpus,
    write_base_model,
)

WORLD = WorldConfig(seed=7, tasks=["sort"], ift_task_weights=[], min_items=3, max_items=5, n_ift=2000, n_self_instruct=0, n_eft=0,
                    n_eval_prompts=0, n_judge_eval=0)


def _margins(engine, pairs: list[dict]) -> list[float]:
    """log pi(chosen | prompt) - log pi(rejected | prompt), pair by pair."""
    out = []
    for p in pairs:
        chosen, rejected = engine.continuation_logprobs([p["prompt"]], [""], [p["chosen"], p["rejected"]])[0]
        out.append(chosen - rejected)
    return out


def _accuracy(engine, prompts: list[str]) -> float:
    """Sampled accuracy as the loop measures it (temperature 0.7), four answers a prompt."""
    sampled = engine.generate(prompts, Sampling(0.7, 1.0, 16), n=4, seed=5, desc="accuracy")
    return statistics.fmean(is_correct(p, a) for p, answers in zip(prompts, sampled) for a in answers)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A sort-only world and a small untrained base model; the test fine-tunes the policy from it."""
    folder = tmp_path_factory.mktemp("dpo")
    build_world(WORLD, folder / "world")
    tokenizer = build_tokenizer(tokenizer_corpus(folder / "world"), vocab_size=256)
    write_base_model(folder / "base", tokenizer,
                     build_base_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=192))
    return folder


def test_dpo_on_oracle_pairs_raises_the_margin_and_keeps_accuracy(policy):
    from conftest import compose_config

    from selfreward.rundir import read_jsonl

    # training=tiny's DPO + NLL (weight 3), as measured below; the built-in recipe's settings
    # (weight 6, the NLL-only shortcut, precomputed reference) pass it too (2026-12-04, seed 1).
    cfg = compose_config(["recipe=none"])
    cfg.training.sft.epochs = 6
    cfg.training.sft.learning_rate = 3e-3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        examples = [{"prompt": r["prompt"], "completion": r["response"]}
                    for r in read_jsonl(policy / "world" / "ift.jsonl")]
        train_sft(str(policy / "base"), examples, policy / "m1", cfg, seed=0)

        used = {r["prompt"] for r in read_jsonl(policy / "world" / "ift.jsonl")}
        fresh = [p for p in _distinct_prompts(WORLD, random.Random(99), 2500) if p not in used]
        pair_prompts, eval_prompts = fresh[:400], fresh[400:600]
        engine = load_engine(str(policy / "m1"), cfg.model, cfg.generation)
        samples = engine.generate(pair_prompts, Sampling(1.0, 1.0, 16), n=8, seed=1, desc="samples")
        groups = [{"prompt": p, "responses": s, "scores": [oracle_score(p, r) for r in s]}
                  for p, s in zip(pair_prompts, samples)]
        pairs, _ = build_pairs(groups)
        assert len(pairs) >= 150, "the policy must be wrong often enough to make pairs"
        train, held_out = pairs[:-50], pairs[-50:]
        before_margins = _margins(engine, held_out)
        before_accuracy = _accuracy(engine, eval_prompts)
        assert 0.15 <= before_accuracy <= 0.9, before_accuracy

        train_dpo(str(policy / "m1"), str(policy / "m1"), train, policy / "m2", cfg, seed=0)
        after = load_engine(str(policy / "m2"), cfg.model, cfg.generation)
        after_margins = _margins(after, held_out)
        after_accuracy = _accuracy(after, eval_prompts)
    finally:
        torch.set_num_threads(threads)

    # The pairs are perfect, so the preference must generalise to pairs it did not train on: the
    # held-out margins rise, pair by pair, by more than two standard errors of the mean rise ...
    rises = [a - b for a, b in zip(after_margins, before_margins)]
    t = statistics.fmean(rises) / (statistics.stdev(rises) / len(rises) ** 0.5)
    values = (statistics.fmean(before_margins), statistics.fmean(after_margins), t, before_accuracy, after_accuracy)
    assert t > 2.0, values
    # ... without the policy getting worse at the task itself (800 sampled answers).
    # Measured with sampling seeds 1-4 for the pairs: training=tiny's recipe 0.237 -> 0.254, 0.242,
    # 0.239, 0.244 (margin rise 2.5-3.5 standard errors); plain DPO (training.dpo.sft_weight=0)
    # 0.237 -> 0.154 (greedy accuracy fell too, 0.405 -> 0.320), which this line catches.
    assert after_accuracy >= before_accuracy, values
    assert all(answer(p) for p in eval_prompts)


def _padding(trainer) -> tuple[int, int]:
    """(tokens in the batches, of which padding) over one epoch of the trainer's dataloader."""
    total = real = 0
    for batch in trainer.get_train_dataloader():
        total += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    return total, total - real


def _tiny_policy(tmp_path, texts):
    """A tokenizer built on ``texts`` and a one-layer Llama on it, both fresh (seed 0)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfreward.generation import load_tokenizer

    raw = build_tokenizer(texts * 10, vocab_size=64)
    raw.chat_template = None
    raw.save_pretrained(tmp_path / "tok")
    tokenizer = load_tokenizer(str(tmp_path / "tok"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    return tokenizer, model


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_group_by_length_batches_rows_of_a_length(stage, tmp_path):
    """``training.{sft,dpo}.group_by_length``: the Trainer's sampler gets every row's padded length (DPO
    rows have no ``input_ids`` for it to read), and a batch holds rows of about one length: on
    short and long rows mixed, far less padding than in random batches."""
    from trl import DPOConfig, SFTConfig
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from selfreward.training import dpo_trainer, sft_trainer

    tokenizer, model = _tiny_policy(tmp_path, ["sort: 3 1 2", "1 2 3 4 5 6 7 8 9 0 " * 4])
    long = "1 2 3 4 5 6 7 8 9 0 " * 4
    lengths = [1 if i % 2 else 40 for i in range(64)]  # short and long answers alternate
    padding = {}
    for grouped in (False, True):
        args = dict(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", per_device_train_batch_size=4,
                    train_sampling_strategy="group_by_length" if grouped else "random", seed=0, data_seed=0)
        if stage == "sft":
            rows = [{"prompt": "sort: 3 1 2", "completion": "1" if n == 1 else long} for n in lengths]
            trainer = sft_trainer(model, tokenizer, rows, SFTConfig(**args, completion_only_loss=True))
            expected = [len(r) for r in trainer.train_dataset["input_ids"]]
        else:
            rows = [{"prompt": "sort: 3 1 2", "chosen": "1" if n == 1 else long, "rejected": "2" if n == 1 else "2" + long[1:]}
                    for n in lengths]
            trainer = dpo_trainer(model, copy.deepcopy(model), tokenizer, rows, DPOConfig(**args))
            data = trainer.train_dataset
            expected = [len(p) + max(len(c), len(r))
                        for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])]
            assert len(set(expected)) == 2
        sampler = trainer._get_train_sampler()
        if grouped:
            assert isinstance(sampler, LengthGroupedSampler) and list(sampler.lengths) == expected
        padding[grouped] = _padding(trainer)
    assert padding[True][0] < padding[False][0]
    assert padding[True][1] * 4 < padding[False][1]  # measured: 8x less padding


def test_sft_in_length_buckets_gives_trls_loss_and_gradients(tmp_path):
    """``training.sft.length_buckets``: a batch of short and long rows run in passes of rows of
    about one length has TRL's loss and gradients (one pass over the padded batch), with less
    padding in the passes."""
    from trl import SFTConfig

    from selfreward.training import length_buckets, sft_trainer

    tokenizer, model = _tiny_policy(tmp_path, ["sort: 3 1 2", "1 2 3 4 5 6 7 8 9 0 " * 4])
    rows = [{"prompt": f"sort: 3 1 {i}", "completion": "1 2 3 4 5 6 7 8 9 0 " * (4 if i % 3 == 0 else 1)}
            for i in range(9)]
    args = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", per_device_train_batch_size=9,
                     completion_only_loss=True, seed=0, data_seed=0)
    trainer = sft_trainer(model, tokenizer, rows, args, length_buckets_per_batch=3)
    batch = next(iter(trainer.get_train_dataloader()))
    parts = length_buckets(batch, 3)
    assert [p["input_ids"].size(0) for p in parts] == [3, 3, 3]
    assert sum(p["attention_mask"].numel() for p in parts) < batch["attention_mask"].numel() * 0.7
    assert sorted(int(n) for p in parts for n in p["attention_mask"].sum(dim=1)) == \
        sorted(int(n) for n in batch["attention_mask"].sum(dim=1))
    items = (batch["labels"][:, 1:] != -100).sum()
    model.train()

    def loss_and_grads(buckets):
        trainer.length_buckets = buckets
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (split, split_grads), (whole, whole_grads) = loss_and_grads(3), loss_and_grads(1)
    assert torch.allclose(split, whole, rtol=1e-5) and whole > 0.1
    for a, b in zip(split_grads, whole_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in split_grads)
    assert length_buckets(batch, 10) is None  # fewer rows than passes: one pass


@pytest.mark.parametrize("precompute", [False, True])
def test_nll_only_rows_give_trls_loss_and_gradients_with_fewer_passes(precompute, tmp_path):
    """Pairs with their chosen answer on both sides (judge anchors) skip their rejected and reference
    passes: on a batch of three real pairs and five such rows, of six and two, and of such rows
    only, the loss and every gradient are TRL's own (computed on all rows, both sides), with the
    reference run or precomputed."""
    from trl import DPOConfig, DPOTrainer

    from selfreward.training import _can_skip_nll_only_passes, _nll_only_rows, dpo_trainer

    tokenizer, model = _tiny_policy(tmp_path, ["sort: 3 1 2", "1 2 3 4 5 6 7 8 9 0"])
    ref = copy.deepcopy(model)
    with torch.no_grad():  # a reference that is not the policy, so that the log-ratios are not all zero
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    real = [{"prompt": f"sort: {i} 1 2", "chosen": "1 2 " + str(i), "rejected": str(i) + " 2 1 9 9"} for i in range(6)]
    same = [{"prompt": f"sort: 3 {i}", "chosen": "3 " * (i + 1), "rejected": "3 " * (i + 1)} for i in range(5)]
    args = DPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", per_device_train_batch_size=11,
                     loss_type=["sigmoid", "sft"], loss_weights=[1.0, 6.0], beta=0.5, seed=0, data_seed=0,
                     **({"precompute_ref_log_probs": True} if precompute else {}))
    trainer = dpo_trainer(model, None if precompute else ref, tokenizer, real + same, args)
    trainer.nll_only_shortcut = True  # as train_dpo sets it from training.dpo.nll_only_shortcut
    assert _can_skip_nll_only_passes(trainer)
    batch = next(iter(trainer.get_train_dataloader()))
    mask = _nll_only_rows(batch)
    assert mask.tolist().count(True) == 5
    model.train()

    def loss_and_grads(compute, rows):
        model.zero_grad()
        loss = compute(model, rows, False)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def rows(real_rows, such_rows):
        keep = torch.cat([(~mask).nonzero()[:real_rows, 0], mask.nonzero()[:such_rows, 0]])
        return {k: (v[keep] if v.size(0) == mask.numel() else torch.cat([h[keep] for h in v.chunk(2)]))
                for k, v in batch.items()}

    for real_rows, such_rows in ((3, 5), (6, 2), (0, 5)):
        part = rows(real_rows, such_rows)
        assert _nll_only_rows(part).tolist() == [False] * real_rows + [True] * such_rows
        fast, fast_grads = loss_and_grads(trainer._compute_loss, part)
        trls, trls_grads = loss_and_grads(lambda *a: DPOTrainer._compute_loss(trainer, *a), part)
        assert torch.allclose(fast, trls, rtol=1e-5, atol=1e-6), (real_rows, such_rows)
        assert fast > 6.0 * 0.1  # the NLL term is in it
        for a, b in zip(fast_grads, trls_grads, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (real_rows, such_rows)
        assert any(g.abs().sum() > 0 for g in fast_grads)

    assert not _nll_only_rows(rows(6, 0)).any()
    trainer.nll_only_shortcut = False
    assert not _can_skip_nll_only_passes(trainer)