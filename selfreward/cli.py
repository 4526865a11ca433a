"""The ``selfreward`` command: a Hydra app around :func:`selfreward.loop.run`.

    selfreward                                   # the default experiment on the built-in world
    selfreward experiment=smoke iterations=1     # an experiment file plus overrides
    selfreward -m seed=0,1,2                     # a sweep, one run directory per job
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from selfreward.config import register_configs
from selfreward.rundir import SelfRewardError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("selfreward")

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _app(cfg: DictConfig) -> None:
    from selfreward.loop import run

    run_dir = HydraConfig.get().runtime.output_dir
    log.info("run directory: %s", run_dir)
    try:
        rows = run(cfg, run_dir)
    except SelfRewardError as e:
        # One clear line for errors of input or run state; a traceback would bury it.
        print(f"selfreward: error: {e}", file=sys.stderr)
        sys.exit(1)
    last = rows[-1]
    log.info("done: M%d in %s (metrics.jsonl holds M1..M%d)", last["model"], run_dir, last["model"])


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
