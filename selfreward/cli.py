"""The ``selfreward`` command: a Hydra app around :func:`selfreward.loop.run`.

    selfreward                                   # the default experiment on the built-in world
    selfreward experiment=smoke iterations=1     # an experiment file plus overrides
    selfreward -m seed=0,1,2                     # a sweep, one run directory per job
    selfreward -m hydra/sweeper=seeds hydra/launcher=slurm   # seeds 0-4, one SLURM job each (conf/hydra/)
    selfreward processes=2 threads=1             # the loop in 2 processes (generation split, DDP training):
                                                 # it launches itself under accelerate (below)

One stage on its own against a run directory: ``python -m selfreward.stages`` (selfreward/stages.py).

Exit codes: 0 done; 1 a run that stopped on its input or state (a bad data file, a run directory
in use, a training loss that went NaN), with one line saying why; 2 a config that cannot work
(a value out of range, a missing template, a resume with another config), stopped before
anything was written; 130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from selfreward import distributed
from selfreward.config import ConfigError, register_configs, validate
from selfreward.rundir import SelfRewardError, lock_run_dir

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("selfreward")

register_configs()

_checked = False  # set once CheckAtStart ran: a Hydra failure before that is a bad command line


def _stop(e: SelfRewardError) -> None:
    # One clear line for errors of input or run state; a traceback would bury it.
    print(f"selfreward: error: {e}", file=sys.stderr)
    sys.exit(2 if isinstance(e, ConfigError) else 1)


def _task_config(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


class CheckAtStart(Callback):
    """Checks the config (and the run directory it names) before Hydra creates or writes into
    that directory, so that a bad value never touches an existing run (``conf/config.yaml``
    registers it under ``hydra.callbacks``)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from selfreward.loop import check_config

        global _checked
        _checked = True
        task = _task_config(config)
        try:
            validate(task)
            try:
                run_dir = Path(config.hydra.run.dir)
            except Exception:  # noqa: BLE001 - a run dir naming ${hydra:...}: loop.run checks it later
                return
            check_config(task, run_dir, write=False)
            # Under a launch of several processes the first one takes the lock (loop.run).
            if run_dir.is_dir() and distributed.is_main():
                with lock_run_dir(run_dir):
                    pass
        except SelfRewardError as e:
            _stop(e)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # The values common to every job; each job's own overrides are checked by loop.run.
        global _checked
        _checked = True
        try:
            validate(_task_config(config))
        except SelfRewardError as e:
            _stop(e)


def _hydra_quoted(value: str) -> str:
    # A quoted override value: a path may hold characters Hydra's grammar reads (a sweep's
    # subdir "seed=0,threads=1" holds a comma); inside quotes only a quote needs its backslash.
    return "'" + value.replace("'", "\\'") + "'"


def free_port() -> int:
    """A port nothing listens on now."""
    # accelerate's default port is one per machine: two runs launched at once would share it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_processes(processes: int, run_dir: str) -> int:
    """Run this job's loop in ``processes`` processes: ``accelerate launch`` (conf/accelerate/ddp.yml;
    on a CPU gloo, on GPUs one each) of ``selfreward.cli`` with the job's overrides and its run
    directory. Waits for it; returns its exit status (130 after Ctrl-C, which reaches the
    processes too; a SIGTERM to this process is passed on to them, as a batch system sends it)."""
    import signal
    import subprocess

    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(Path(CONFIG_DIR) / "accelerate" / "ddp.yml"),
               "--num_processes", str(processes), "--main_process_port", str(free_port()),
               "-m", "selfreward.cli", *hydra_cfg.overrides.task,
               f"hydra.run.dir={_hydra_quoted(str(run_dir))}", f"hydra.job.name={hydra_cfg.job.name}"]
    log.info("launching %d processes: %s", processes, " ".join(command[1:]))
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _app(cfg: DictConfig) -> None:
    from selfreward.loop import run

    run_dir = HydraConfig.get().runtime.output_dir
    log.info("run directory: %s", run_dir)
    if cfg.processes > 1 and distributed.world_size() == 1:
        code = launch_processes(cfg.processes, run_dir)
        if code == 130:
            print(f"selfreward: interrupted; run the same command again to resume {run_dir}", file=sys.stderr)
        if code:
            sys.exit(code)
        return
    try:
        rows = run(cfg, run_dir)
    except SelfRewardError as e:
        _stop(e)
    except KeyboardInterrupt:
        print(f"selfreward: interrupted; run the same command again to resume {run_dir}", file=sys.stderr)
        sys.exit(130)
    last = rows[-1]
    log.info("done: M%d in %s (metrics.jsonl holds M1..M%d)", last["model"], run_dir, last["model"])


def main() -> None:
    if distributed.rank() > 0:
        # Under a launch of several processes the first one writes the run's Hydra files and log.
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    try:
        _app()
    except SystemExit as e:
        # Hydra reports a command line it cannot compose (an unknown key, a value of the wrong
        # type, a missing option) itself and exits with 1; that is a bad config: 2.
        # (The flag is read from the module Hydra instantiates the callback from, which is not
        # this one under `python -m selfreward.cli`.)
        import selfreward.cli as installed

        if e.code == 1 and not installed._checked:
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
