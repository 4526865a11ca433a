"""The paper's experiment: its config composes, and its Open Assistant data path runs on the
fixture (a tiny local model stands in for Llama-2-70B; nothing is downloaded)."""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import selfreward.loop as loop
from selfreward.rundir import read_jsonl
from selfreward.data.builtin import build_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "oasst"


def test_paper_config(tiny_config):
    from conftest import compose_config

    cfg = compose_config(["experiment=paper"])
    assert cfg.model.name_or_path == "meta-llama/Llama-2-70b-hf" and cfg.data.source == "oasst"
    assert cfg.judge.template == "judge_additive" and cfg.prompts.shots == 8 and cfg.prompts.temperature == 0.6
    assert cfg.training.dpo.beta == 0.1 and cfg.training.dpo.learning_rate == 1e-6
    assert cfg.generation.n_candidates == 4 and cfg.judge.repeats == 3 and cfg.iterations == 2


def test_oasst_data_path_on_the_fixture(tiny_config, tmp_path, monkeypatch):
    texts = [r["text"] for name in ("train", "validation") for r in read_jsonl(FIXTURE / f"{name}.jsonl")]
    tokenizer = build_tokenizer(texts + ["Score: 0 1 2 3 4 5"], vocab_size=400)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, vocab_size=len(tokenizer),
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    # The SFT-on-IFT judge of the EFT stage, scripted to agree with the human ranking on the
    # fixture's replies so that the EFT filter keeps them (a random tiny model never would).
    ranks = {}
    for name in ("train", "validation"):
        for r in read_jsonl(FIXTURE / f"{name}.jsonl"):
            if r.get("rank") is not None:
                ranks[r["text"]] = r["rank"]
    real_judge = loop.judge

    def scripted(engine, template, items, cfg, *, repeats=None, seed, desc=""):
        if desc != "EFT judgments":
            return real_judge(engine, template, items, cfg, repeats=repeats, seed=seed, desc=desc)
        return [{"judgments": [f"ok\nScore: {5 - ranks[r]}"]} for _, r in items]

    monkeypatch.setattr(loop, "judge", scripted)
    cfg = tiny_config("iterations=0", "model=llama2_70b", f"model.name_or_path={tmp_path / 'model'}",
                      "model.dtype=float32", "data=oasst", f"data.oasst.source={FIXTURE}",
                      "data.oasst.n_eval=1", "data.oasst.n_judge_eval=2",
                      "training.builtin_only=false")  # a random tiny model in the 70B's place
    rows = loop.run(cfg, tmp_path / "run")
    data = tmp_path / "run" / "data"
    # Counts of the fixture (see tests/test_oasst.py). Every EFT reply agrees with the scripted
    # ranking and no score is more common than another by more than keep_most_common: all are kept.
    assert [len(read_jsonl(data / f"{n}.jsonl")) for n in ("ift", "eval_prompts", "judge_eval", "eft_groups")] \
        == [4, 1, 2, 2]
    eft = read_jsonl(data / "eft.jsonl")
    assert len(eft) == sum(len(g["responses"]) for g in read_jsonl(data / "eft_groups.jsonl"))
    assert all(row["judgment"].endswith(f"Score: {row['score']}") for row in eft)
    assert (tmp_path / "run" / "m1" / "ift_model" / "model.safetensors").is_file()
    assert rows[0]["model"] == 1 and rows[0]["policy/oracle_accuracy"] is None  # no reference answers
    assert {"time/data_s", "time/eft_s", "time/sft_s", "time/eval_s"} <= rows[0].keys()
