"""Run one stage of the loop on its own, in its own process, against a run directory.

    python -m selfreward.stages config --run-dir runs/x experiment=smoke seed=1   # write runs/x/config.yaml
    python -m selfreward.stages data --run-dir runs/x
    python -m selfreward.stages sft --run-dir runs/x
    python -m selfreward.stages eval --run-dir runs/x --t 1                       # measure M1
    python -m selfreward.stages candidates --run-dir runs/x --t 1                 # M1 samples into m2/
    accelerate launch --num_processes 1 -m selfreward.stages dpo --run-dir runs/x --t 1   # M2, under accelerate

The run directory's ``config.yaml`` is the config: ``config`` composes it once from Hydra overrides
(as ``selfreward`` would) and every other stage reads it. Other stages accept overrides of the keys
a run may change on resume (``threads=1``, ``logger=none``, ``iterations=3``); any other change
stops with the same message as a resumed ``selfreward`` run. ``--t T`` names the model the stage
works with: the iteration stages (prompts, candidates, judgments, pairs, and the training stage
``dpo`` / ``sft_best`` / ``rft``, or ``train`` for whichever the config trains with) run
iteration T, where M_T makes ``m{T+1}/``; ``eval`` measures M_T in ``m{T}/``. ``data``, ``base``,
``eft`` and ``sft`` (M1) take no ``--t``.

A stage that already finished (its ``.done`` marker) is not run again; one whose input is missing
stops with a message naming the file and the stage that writes it. The stage prints its info (the
marker's JSON) on the last line of stdout (from the first process of a launch). Exit codes are those
of ``selfreward``: 1 for a run that stopped on its input or state, 2 for a config that cannot work,
130 when interrupted.

Under a launch of several processes (``accelerate launch --config_file conf/accelerate/ddp.yml
--num_processes N -m selfreward.stages STAGE ...``) every process runs the stage together
(:mod:`selfreward.distributed`): training is TRL's under accelerate (DDP, ZeRO-3, FSDP), the
generating stages (prompts, candidates, judgments, judge_pairs, eval, eft) split their requests over
the processes and gather the results in order, the others (data, base, pairs) run in the first
process while the rest wait. Only the first process writes files, markers and W&B.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from selfreward import distributed
from selfreward.config import Config, ConfigError, register_configs, validate
from selfreward.rundir import SelfRewardError, lock_run_dir, record_environment

log = logging.getLogger("selfreward")


def _stages() -> dict:
    # Imported here: `config` and `--help` need no torch.
    from selfreward import loop

    return {
        "data": loop.stage_data,
        "base": loop.stage_base,
        "eft": loop.stage_eft,
        "sft": loop.stage_sft,
        "eval": loop.stage_eval,
        "prompts": loop.stage_prompts,
        "candidates": loop.stage_candidates,
        "judgments": loop.stage_judgments,
        "pairs": loop.stage_pairs,
        "judge_pairs": loop.stage_judge_pairs,
        "train": loop.stage_train,
        "dpo": loop.stage_train,
        "sft_best": loop.stage_train,
        "rft": loop.stage_train,
    }


NAMES = ("config", "data", "base", "eft", "sft", "eval", "prompts", "candidates", "judgments", "pairs", "judge_pairs",
         "train", "dpo", "sft_best", "rft")
NEEDS_T = {"eval", "prompts", "candidates", "judgments", "pairs", "judge_pairs", "train", "dpo", "sft_best", "rft"}


def compose(overrides: list[str]):
    """The config ``selfreward OVERRIDES`` would run (``conf/`` composed by Hydra), without its run dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from selfreward.cli import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def load_config(run_dir: str | Path, overrides: list[str] = ()):
    """The config saved in ``run_dir/config.yaml`` (read as a resumed run reads it), with
    ``key=value`` overrides; checked as ``selfreward`` checks a resumed run."""
    from selfreward.loop import _upgrade, _with_new_defaults, check_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no run (no config.yaml); start one with "
                          f"python -m selfreward.stages config --run-dir {run_dir} [overrides]")
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} cannot be read ({str(e).splitlines()[0]}); the run directory is damaged") from None
    register_configs()
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), _with_new_defaults(_upgrade(saved)),
                              OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors name the key
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}") from None
    validate(cfg)
    check_config(cfg, run_dir, write=False)
    return cfg


def run_stage(name: str, run_dir: str | Path, t: int | None = None, overrides: list[str] = (), *,
              lock: bool = True) -> dict:
    """Run stage ``name`` against ``run_dir`` (``config``: write the run's config from Hydra
    overrides); return its info. Holds the run directory's lock while it runs (unless ``lock`` is
    false: the loop that launched it holds it), in the main process of a multi-process launch
    (``RANK`` 0) only, since its other processes are the same stage."""
    run_dir = Path(run_dir)
    distributed.init()  # a launch of several processes: join its process group
    if name == "config":
        from selfreward.loop import check_config

        cfg = compose(overrides)
        validate(cfg)
        check_config(cfg, run_dir, write=False)
        if distributed.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            with lock_run_dir(run_dir):
                check_config(cfg, run_dir)
        distributed.barrier()
        return {"config": str(run_dir / "config.yaml")}
    if name in NEEDS_T and t is None:
        raise SelfRewardError(f"stage {name} needs --t T (eval: measure M_T; the others: iteration T, "
                              f"where M_T writes m{{T+1}}/)")
    cfg = load_config(run_dir, overrides)
    objective = cfg.training.objective
    if name in ("dpo", "sft_best", "rft") and name != objective:
        raise ConfigError(f"this run trains with training.objective={objective}; its training stage is "
                          f"{objective} (or train), not {name}")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    stage = _stages()[name]
    entry = f"stage {name}" + (f" --t {t}" if t is not None else "")
    if not lock or not distributed.is_main():
        record_environment(run_dir, entry)
        return stage(cfg, run_dir, t)
    with lock_run_dir(run_dir):
        record_environment(run_dir, entry)
        return stage(cfg, run_dir, t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selfreward.stages",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=NAMES)
    parser.add_argument("--run-dir", required=True, help="the run directory (its config.yaml is the config)")
    parser.add_argument("--t", type=int, default=None, help="the model M_T the stage works with")
    parser.add_argument("--no-lock", action="store_true",
                        help="do not take the run directory's lock: the loop that started this stage holds it")
    parser.add_argument("overrides", nargs="*", help="config: Hydra overrides; other stages: key=value of a "
                                                     "key a resumed run may change (threads, logger, iterations)")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        info = run_stage(args.stage, args.run_dir, args.t, args.overrides, lock=not args.no_lock)
    except SelfRewardError as e:
        print(f"selfreward: error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    except KeyboardInterrupt:
        print(f"selfreward: interrupted; run the same command again to redo stage {args.stage}", file=sys.stderr)
        sys.exit(130)
    if not distributed.is_main():
        return  # the first process of a launch prints it
    # As the marker records it (numpy and torch scalars as numbers).
    print(json.dumps(info, sort_keys=True, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


if __name__ == "__main__":
    main()
