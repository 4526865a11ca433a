"""Where metrics go besides ``metrics.jsonl``: Weights & Biases, when ``logger=wandb``.

The W&B run id is derived from the run directory, so a resumed run continues the same W&B run.
Offline mode needs no account: the run is written under ``<run_dir>/wandb`` and ``wandb sync``
uploads it later.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import OmegaConf


PAIR_COLUMNS = ["model", "prompt", "chosen", "rejected", "chosen_score", "rejected_score",
                "chosen_judgment", "rejected_judgment"]


class Tracker:
    """Logs each model's metrics row (and a table of sample pairs) to the configured backend."""

    def __init__(self, cfg, run_dir: Path):
        self.cfg = cfg.logger
        self.run = None
        if self.cfg.backend == "none":  # otherwise wandb (config.validate allows no other)
            return
        import wandb

        run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            name=f"{cfg.experiment_name}-seed{cfg.seed}",
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=self.cfg.mode,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        # TRL's training curves share this run and advance its step; ours are indexed by model.
        self.run.define_metric("model")
        for prefix in ("judge", "policy", "prompts", "pairs", "self_judge", "time"):
            self.run.define_metric(f"{prefix}/*", step_metric="model")

    def log_model(self, row: dict, pairs: list[dict] | None = None) -> None:
        if self.run is None:
            return
        import wandb

        payload = {k: v for k, v in row.items() if v is not None}
        if pairs:
            table = wandb.Table(columns=PAIR_COLUMNS)
            for p in pairs[: self.cfg.sample_pairs]:
                table.add_data(row["model"], p["prompt"], p["chosen"], p["rejected"], p["chosen_score"],
                               p["rejected_score"], "\n---\n".join(p.get("chosen_judgments", [])),
                               "\n---\n".join(p.get("rejected_judgments", [])))
            payload[f"pairs/samples_m{row['model']}"] = table
        self.run.log(payload)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
