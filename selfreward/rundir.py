"""The run directory: crash-safe files and stage markers.

Every stage writes its output whole (to a temporary name, then renamed into place) and only
then writes ``<stage>.done``. A stage whose marker is missing is run again from scratch, so a
crash never leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


class SelfRewardError(RuntimeError):
    """An error caused by the user's input or run state; the CLI prints it as one line."""


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON Lines (gzipped when the name ends in .gz), naming the file and line of the
    first malformed record."""
    path = Path(path)
    if not path.is_file():
        raise SelfRewardError(f"{path}: file not found")
    rows = []
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SelfRewardError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise SelfRewardError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
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


def run_stage(folder: Path, stage: str, fn: Callable[[], dict]) -> dict:
    """Run ``fn`` unless ``stage`` is already done in ``folder``; return its recorded info.

    ``fn`` writes its outputs into ``folder`` and returns a small dict of facts (counts...);
    the marker records them with the stage's wall time, so a resumed run reports the same
    numbers as the run that did the work.
    """
    if is_done(folder, stage):
        return read_done(folder, stage)
    Path(folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    info = dict(fn() or {})
    info["seconds"] = time.perf_counter() - start
    write_json(done_path(folder, stage), info)
    return info


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place, dropping a stale one left by a crash."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (whatever a crashed attempt left there is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
