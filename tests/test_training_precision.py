"""Training keeps float32 weights whatever model.dtype says, and LoRA trains through peft and is
merged on save. On a tiny Llama saved in the Hugging Face format."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from selfreward.training import train_dpo, train_sft
from selfreward.data.builtin import build_base_model, build_tokenizer, write_base_model

TEXTS = ["User: sort: 3 1 2\nAssistant:\n1 2 3", "User: evens: 1 2 4\nAssistant:\n2 4"] * 20
EXAMPLES = [{"prompt": "sort: 3 1 2", "completion": "1 2 3"}, {"prompt": "evens: 1 2 4", "completion": "2 4"}] * 4
PAIRS = [{"prompt": "sort: 3 1 2", "chosen": "1 2 3", "rejected": "3 2 1"},
         {"prompt": "evens: 1 2 4", "chosen": "2 4", "rejected": "1"}] * 2


@pytest.fixture
def base(tmp_path):
    tokenizer = build_tokenizer(TEXTS, vocab_size=300)
    folder = tmp_path / "base"
    write_base_model(folder, tokenizer, build_base_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2,
                                                         intermediate_size=64))
    return folder


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _cfg(tiny_config, *overrides):
    return tiny_config("model.dtype=bfloat16", "training.sft.lr_scheduler_type=constant",
                       "training.sft.warmup_ratio=0", "training.sft.batch_size=4", "training.sft.epochs=1",
                       "training.dpo.lr_scheduler_type=constant", "training.dpo.warmup_ratio=0",
                       "training.dpo.batch_size=2", "training.dpo.epochs=1", *overrides)


def test_a_learning_rate_of_1e_6_changes_the_weights(base, tmp_path, tiny_config):
    """model.dtype=bfloat16 applies to generation; training keeps float32 weights. Adam moves each
    weight by about lr = 1e-6 a step, while bfloat16's spacing near the init scale (0.02) is about
    1.2e-4: in bfloat16 weights every update would round away."""
    cfg = _cfg(tiny_config, "training.sft.learning_rate=1e-6")
    train_sft(str(base), EXAMPLES, tmp_path / "out" / "model", cfg, seed=0)
    before, after = _weights(base), _weights(tmp_path / "out" / "model")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert after[q].dtype == torch.float32
    delta = (after[q] - before[q]).abs()
    assert (delta > 0).float().mean() > 0.5  # most weights moved
    assert delta.max() < 1e-5  # 2 steps of about 1e-6
    # ...which bfloat16 weights could not have held: added in bfloat16, most updates round away.
    w = before[q].bfloat16()
    assert ((w + (after[q] - before[q]).bfloat16()) == w).float().mean() > 0.9


def test_lora_sft_and_dpo_save_merged_plain_models(base, tmp_path, tiny_config):
    cfg = _cfg(tiny_config, "training.lora.enabled=true", "training.lora.r=4", "training.lora.alpha=8",
               "training.lora.dropout=0", "training.sft.learning_rate=1e-2", "training.dpo.learning_rate=1e-2",
               "training.dpo.sft_weight=0")
    sft_dir = tmp_path / "m1" / "model"
    train_sft(str(base), EXAMPLES, sft_dir, cfg, seed=0)
    # Merged: a plain model folder, no adapter, loadable as is.
    assert not (sft_dir / "adapter_config.json").exists()
    assert type(AutoModelForCausalLM.from_pretrained(sft_dir)).__name__ == "LlamaForCausalLM"
    before, after = _weights(base), _weights(sft_dir)
    assert set(after) == set(before)
    # LoRA changed the linear layers it targets and nothing else (the embeddings stay as they were).
    assert not torch.equal(after["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(after["model.layers.0.mlp.down_proj.weight"], before["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])

    # DPO against M_t itself: the reference is the adapter-free policy (no second model loaded).
    dpo_dir = tmp_path / "m2" / "model"
    train_dpo(str(sft_dir), str(sft_dir), PAIRS, dpo_dir, cfg, seed=0)
    assert not (dpo_dir / "adapter_config.json").exists()
    m1, m2 = after, _weights(dpo_dir)
    assert not torch.equal(m2["model.layers.0.self_attn.v_proj.weight"], m1["model.layers.0.self_attn.v_proj.weight"])
    assert torch.equal(m2["model.embed_tokens.weight"], m1["model.embed_tokens.weight"])
