"""The run directory: crash-safe files and stage markers.

Every stage writes its output whole (to a temporary name, then renamed into place) and only
then writes ``<stage>.done``. A stage whose marker is missing is run again from scratch, so a
crash never leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("selfreward")


class SelfRewardError(RuntimeError):
    """An error caused by the user's input or run state; the CLI prints it as one line."""


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: readers see the old file or the whole new one, never a part.

    A failed write (a full disk, no permission) removes its temporary file and raises
    :class:`SelfRewardError`; the stage it belongs to has no marker yet, so it is redone on resume.
    Under a launch of several processes only the main one writes (:mod:`selfreward.distributed`).
    """
    if not _main_process():
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SelfRewardError(f"cannot write {path}: {e.strerror or e}; the stage writing it is unfinished and "
                              f"is redone when the run is resumed") from None


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON Lines (gzipped when the name ends in .gz), naming the file and line of the
    first malformed record."""
    return [row for _, row in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: Path) -> list[tuple[int, dict]]:
    """:func:`read_jsonl` with each record's line number, for messages that point at the line."""
    path = Path(path)
    if not path.is_file():
        raise SelfRewardError(f"{path}: file not found")
    rows = []
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            # Lines are decoded one at a time so that an error names the line it is on.
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SelfRewardError(f"{path}:{number}: not UTF-8 text (byte {raw[e.start]:#04x} at "
                                          f"column {e.start + 1}); save the file as UTF-8") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SelfRewardError(f"{path}:{number}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise SelfRewardError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                rows.append((number, row))
    except (OSError, EOFError) as e:  # no permission, a truncated or corrupt .gz
        raise SelfRewardError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    return rows


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def done_path(folder: Path, stage: str) -> Path:
    return Path(folder) / f"{stage}.done"


def is_done(folder: Path, stage: str) -> bool:
    return done_path(folder, stage).is_file()


def read_done(folder: Path, stage: str) -> dict:
    return read_json(done_path(folder, stage))


def _main_process() -> bool:
    from selfreward import distributed

    return distributed.is_main()


def run_stage(folder: Path, stage: str, fn: Callable[[], dict], *, parallel: bool = False) -> dict:
    """Run ``fn`` unless ``stage`` is already done in ``folder``; return its recorded info.

    ``fn`` writes its outputs into ``folder`` and returns a small dict of facts (counts...);
    the marker records them with the stage's wall time, so a resumed run reports the same
    numbers as the run that did the work.

    Under a launch of several processes (:mod:`selfreward.distributed`), the main process decides
    whether the stage is done; a ``parallel`` stage (generation sharded, training) runs ``fn`` in
    every process, any other in the main one only while the rest wait. Only the main process writes
    files and the marker; every process returns the main one's info, once the marker is written.
    """
    from selfreward import distributed

    if distributed.active():
        return _run_stage_together(folder, stage, fn, parallel)
    return _run_stage(folder, stage, fn)


def _run_stage_together(folder: Path, stage: str, fn: Callable[[], dict], parallel: bool) -> dict:
    from selfreward import distributed

    if distributed.broadcast(is_done(folder, stage)):
        return read_done(folder, stage)
    outcome: tuple[str, Any] = ("waited", None)
    error: BaseException | None = None
    if parallel or distributed.is_main():
        try:
            if parallel:
                with distributed.parallel():
                    outcome = ("ok", _run_stage(folder, stage, fn))
            else:
                outcome = ("ok", _run_stage(folder, stage, fn))
        except Exception as e:  # noqa: BLE001 - told to the other processes, then raised here
            # Said at once: the other processes may be waiting in a collective that never comes.
            log.error("stage %s failed in process %d: %s: %s", stage,
                                                  distributed.rank(), type(e).__name__, e)
            error, outcome = e, ("error", f"{type(e).__name__}: {e}")
    outcomes = distributed.gather(outcome)
    failed = [(r, what) for r, (status, what) in enumerate(outcomes) if status == "error"]
    if error is not None:
        raise error
    if failed:
        r, what = failed[0]
        raise SelfRewardError(f"stage {stage} in {folder} failed in process {r}: {what}")
    return outcomes[0][1]


def _run_stage(folder: Path, stage: str, fn: Callable[[], dict]) -> dict:
    if is_done(folder, stage):
        return read_done(folder, stage)
    start = time.perf_counter()
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        info = dict(fn() or {})
        info["seconds"] = time.perf_counter() - start
        write_json(done_path(folder, stage), info)
    except OSError as e:  # a write that failed inside a library (a model save on a full disk)
        where = f" ({e.filename})" if e.filename else ""
        raise SelfRewardError(f"stage {stage} in {folder} failed: {e.strerror or e}{where}; it is unfinished "
                              f"and is redone when the run is resumed") from None
    return info


@contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``<run_dir>/run.lock`` for the ``with`` block.

    A second process on the same run directory stops at once with a clear message instead of
    interleaving its stages with the first one's. The operating system drops the lock when its
    process ends, however it ends, so a crash never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(Path(run_dir) / "run.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SelfRewardError(
            f"{run_dir} is in use by another selfreward process (it holds {lock.lock_file}); wait for it "
            f"to finish, or pick another hydra.run.dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place, dropping a stale one left by a crash (the main
    process of a launch of several only)."""
    if not _main_process():
        return
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (whatever a crashed attempt left there is removed). In a stage
    that several processes run together, the main one makes it while the others wait."""
    from selfreward import distributed

    if _main_process():
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    if distributed.sharding():
        distributed.barrier()
    return path


# The self-judge measured on more held-out prompts than the run's own judge set, after the run:
# one row per model and size, written by scripts/judge_heldout.py, read by the report. The loop
# never reads it.
HELDOUT_JUDGE = Path("judge_heldout") / "summary.jsonl"

# The record of where a run ran. Runs are bit-identical on one machine, not across machines: the
# same code and seed gave another M1 on a CPU of another kind, so each start writes these facts
# into the run directory, and a resume on different ones says so.
ENVIRONMENT = "environment.jsonl"
# The libraries whose versions can change a run's numbers (kernels, tokenisation, trainer defaults).
_PACKAGES = ("selfreward", "torch", "transformers", "trl", "datasets", "tokenizers", "accelerate", "peft",
             "numpy", "safetensors", "vllm")
# Facts recorded but left out of the comparison: they differ on every start by design, or (the
# kernel's version, the core count when torch's threads are set) they do not move the numbers.
_NOT_COMPARED = ("started", "entry", "system", "cpus")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """The facts of this process that a run's numbers depend on: Python, the CPU and the kernels
    torch picks for it, CUDA and GPUs, torch's thread count, and the libraries' versions."""
    from importlib import metadata

    import torch

    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "system": platform.platform(),
        "cpu": _cpu_name(),
        # The vector kernels torch dispatches to (e.g. AVX2, AVX512): what moves results across CPUs.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        # Counted without starting CUDA in this process (a vLLM engine started later forks workers).
        "gpus": torch.cuda.device_count(),
        "packages": packages,
    }


def environment_changes(first: dict, now: dict) -> list[str]:
    """``key: old -> new`` for each fact of ``now`` that differs from ``first`` (those of
    ``_NOT_COMPARED`` aside)."""
    changes = []
    for key in sorted(set(first) | set(now)):
        if key in _NOT_COMPARED or key == "packages":
            continue
        if first.get(key) != now.get(key):
            changes.append(f"{key}: {first.get(key)!r} -> {now.get(key)!r}")
    old, new = first.get("packages") or {}, now.get("packages") or {}
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes.append(f"{name}: {old.get(name)} -> {new.get(name)}")
    return changes


def record_environment(run_dir: Path, entry: str) -> list[str]:
    """Append this start's :func:`environment` to ``run_dir/environment.jsonl`` (one line per
    start: a launch, a resume, a stage run on its own as ``entry``) and return how it differs from
    the run's first start, which is also logged as a warning: a run resumed elsewhere is not
    bit-identical to one that ran straight through."""
    path = Path(run_dir) / ENVIRONMENT
    rows = read_jsonl(path) if path.is_file() else []
    now = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entry": entry, **environment()}
    write_jsonl(path, [*rows, now])
    changes = environment_changes(rows[0], now) if rows else []
    if changes:
        more = f" (and {len(changes) - 1} more; see {path})" if len(changes) > 1 else f" (see {path})"
        log.warning("%s was started on another machine or with other libraries (%s%s); its results will not "
                    "be bit-identical to a run made in one place", run_dir, changes[0], more)
    return changes
