"""scripts/bench_training.py on the shared tiny run: each layout trains both stages and the
output has its time, padding share and speed-up (no assertion on the times themselves)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_training_runs_every_layout_on_both_stages(tiny_run, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_training.py"), str(tiny_run), "--t", "1", "--steps", "2",
         "--rounds", "1", "--layouts", "random:1", "grouped:1", "grouped:1:nll", "random:1:b2", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("sft", "dpo"):
        assert re.search(rf"^{stage}: \d+ rows, 2 steps of \d+", done.stdout, re.MULTILINE), done.stdout
    for layout in ("random:1", "grouped:1", "grouped:1:nll", "random:1:b2"):
        assert len(re.findall(rf"^{layout} +\d+\.\d +\d+\.\d +\d+\.\d% +\d+\.\d\dx$", done.stdout, re.MULTILINE)) == 2
    result = json.loads(out.read_text())
    assert set(result) == {"sft", "dpo"}
    for stage in result.values():
        assert stage.pop("steps") == [2]  # every layout trained exactly --steps optimizer steps
        assert stage["random:1"]["speed_up"] == 1.0
        assert all(0 <= row["padding"] < 1 and row["median_s"] > 0 for row in stage.values())
    # Two passes by length pad SFT's batches less than one; DPO's batches are not split.
    assert result["sft"]["random:1:b2"]["padding"] < result["sft"]["random:1"]["padding"]
    assert result["dpo"]["random:1:b2"]["padding"] == result["dpo"]["random:1"]["padding"]


def test_bench_training_refuses_a_bad_layout(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_training.py"), str(tmp_path),
                           "--layouts", "sorted:2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a layout is SAMPLING:THREADS" in done.stderr
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_training.py"), str(tmp_path),
                           "--layouts", "grouped:2:some"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "SAMPLING:THREADS:nll" in done.stderr
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_training.py"), str(tmp_path),
                           "--layouts", "random:1:b1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "N at least 2" in done.stderr
