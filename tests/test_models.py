"""Real model entries load through the same code path, here from tiny models saved locally in
the Hugging Face format (nothing can be downloaded on the test machines)."""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import selfreward.loop as loop
from selfreward.generation import Sampling, load_engine
from selfreward.rundir import read_jsonl
from selfreward.data.builtin import WorldConfig, build_tokenizer, build_world, tokenizer_corpus


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(n_ift=300, n_self_instruct=40, n_eft=300, n_eval_prompts=8, n_judge_eval=4), folder)
    return folder


def _tiny_llama(tokenizer, *, layers: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                        intermediate_size=64, vocab_size=len(tokenizer),
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))


def _save(folder, model, tokenizer, chat_template: bool):
    if not chat_template:
        tokenizer.chat_template = None  # like a base model (Llama-2) that ships none
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("entry", ["qwen2_5_0_5b", "llama2_70b"])
def test_real_model_entry_runs_an_iteration(entry, world, tmp_path, tiny_config):
    tokenizer = build_tokenizer(tokenizer_corpus(world))
    torch.manual_seed(0)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if entry == "qwen2_5_0_5b":
        model = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             num_key_value_heads=1, intermediate_size=192, **ids))
    else:
        model = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=192, **ids))
    path = _save(tmp_path / "hub_model", model, tokenizer, chat_template=entry == "qwen2_5_0_5b")

    # Trained long enough that the judge writes "Score: N" lines and the iteration has pairs.
    cfg = tiny_config(f"model={entry}", f"model.name_or_path={path}", "model.dtype=float32",
                      "data=files", f"data.dir={world}", "training.sft.epochs=6",
                      # A random tiny model in a real entry's place needs the tiny model's settings.
                      "training.builtin_only=false")
    rows = loop.run(cfg, tmp_path / "run")
    assert [r["model"] for r in rows] == [1, 2]
    saved = AutoTokenizer.from_pretrained(tmp_path / "run" / "m1" / "model")
    # A model without a chat template gets the default one, saved with M1 for every later stage.
    assert saved.chat_template
    assert read_jsonl(tmp_path / "run" / "m2" / "candidates.jsonl")
    assert rows[0]["policy/oracle_accuracy"] is not None  # eval prompts carry reference answers


def test_engine_batches_match_one_at_a_time(world, tmp_path):
    """Left padding and length grouping do not change greedy outputs."""
    tokenizer = build_tokenizer(tokenizer_corpus(world))
    model = _tiny_llama(tokenizer, layers=2)
    path = _save(tmp_path / "m", model, tokenizer, chat_template=True)

    class Cfg:
        name_or_path, dtype, device, attn_implementation, chat_template, trust_remote_code = (
            str(path), "float32", "cpu", None, None, False)
        backend, batch_size = "hf", 4

    engine = load_engine(str(path), Cfg, Cfg)
    prompts = ["sort: 3 1 2", "reverse: 9 8 7 6 5 4", "unique: 1 1", "evens: 2 4 6 8 1 3 5", "sort: 5 5"]
    greedy = Sampling(temperature=0.0, max_new_tokens=8)
    batched = engine.generate(prompts, greedy)
    engine.batch_size = 1
    single = engine.generate(prompts, greedy)
    assert batched == single
    # Sampling with a seed is repeatable; n samples come back per prompt.
    sampled = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=8)
    engine.batch_size = 4
    assert engine.generate(prompts, sampled, n=3, seed=7) == engine.generate(prompts, sampled, n=3, seed=7)
    assert all(len(o) == 3 for o in engine.generate(prompts, sampled, n=3, seed=7))


def test_continuation_logprobs_match_a_plain_forward_pass(world, tmp_path):
    tokenizer = build_tokenizer(tokenizer_corpus(world))
    model = _tiny_llama(tokenizer, layers=1, seed=1).eval()
    from selfreward.generation import HFEngine, chat_prompt_ids

    engine = HFEngine(model, tokenizer, batch_size=3)
    messages = ["judge this: sort: 3 1 2", "a much longer message: reverse: 9 8 7 6 5 4 3"]
    prefixes = ["relevant yes\nScore:", "Score:"]
    got = engine.continuation_logprobs(messages, prefixes, [" 4", " 5"])
    for message, prefix, row in zip(messages, prefixes, got):
        for cont, value in zip([" 4", " 5"], row):
            ids = chat_prompt_ids(tokenizer, message) + tokenizer.encode(prefix + cont, add_special_tokens=False)
            n = len(tokenizer.encode(cont, add_special_tokens=False))
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0]
            expected = sum(torch.log_softmax(logits[k - 1], -1)[ids[k]].item() for k in range(len(ids) - n, len(ids)))
            assert value == pytest.approx(expected, abs=1e-4)
