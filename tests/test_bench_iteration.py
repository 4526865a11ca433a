"""scripts/bench_iteration.py --quick: both pipelines run every stage on the same work, and the
output has each stage's time and ratio (no assertion on the times themselves)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("prompts", "candidates", "judgments", "pairs", "dpo", "eval", "total")


def test_bench_iteration_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_iteration.py"), "--quick", "--threads", "1",
         "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    number = r"\d+\.\d+"
    for stage in STAGES:
        # stage, framework s, naive s, ratio; the same in CPU seconds; the framework's share
        row = rf"^{stage} +{number} +{number} +{number}x +{number} +{number} +{number}x +\d+%$"
        assert re.search(row, done.stdout, re.MULTILINE), (stage, done.stdout[-2000:])
    assert "what-if, DPO" in done.stdout and "prompt filters" in done.stdout

    result = json.loads(out.read_text())
    for key in ("framework_s", "naive_s", "ratio", "framework_cpu_s", "naive_cpu_s"):
        assert set(result[key]) == set(STAGES) - {"total"}, key
    assert result["total_ratio"] > 0 and result["total_cpu_ratio"] > 0
    # Same work on both sides: the naive pipeline takes the framework's inputs at every stage.
    counts = result["work"]["framework"]["counts"], result["work"]["naive"]["counts"]
    assert counts[0] == counts[1] and counts[0]["candidates"] > 0 and counts[0]["dpo_steps"] > 0
    assert set(result["what_if_dpo_s"]) == {"as_is", "precompute_ref_log_probs"}
