"""``data=files``: the user's own folder of the four JSON Lines files (the contract in
:mod:`selfreward.data`). Each file is checked where it is, so that an error names the user's file
and line, then copied into the run, so that the run does not change when the folder does.

    selfreward data=files data.dir=/path/to/folder model=...
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selfreward.data import FILES, check_file


def check(cfg) -> None:
    """At start: ``data.dir`` is a folder that holds the four files."""
    from selfreward.config import ConfigError

    if not cfg.data.dir:
        raise ConfigError("invalid config: data.dir=None; allowed: with data=files, a folder holding ift.jsonl, "
                          "eft.jsonl, eval_prompts.jsonl and judge_eval.jsonl (data.dir=FOLDER)")
    folder = Path(cfg.data.dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"invalid config: data.dir={cfg.data.dir!r} is not a folder")
    for name in FILES:
        if not (folder / f"{name}.jsonl").is_file():
            raise ConfigError(f"invalid config: data.dir={cfg.data.dir!r} has no {name}.jsonl "
                              f"(it needs {', '.join(f + '.jsonl' for f in FILES)})")


def prepare(cfg, data_dir: Path) -> dict:
    """Check the user's files, then copy them into ``data_dir``; return counts per file."""
    src = Path(cfg.data.dir).expanduser()
    counts = {name: len(check_file(src / f"{name}.jsonl", name, cfg)) for name in FILES}
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(src / f"{name}.jsonl", data_dir / f"{name}.jsonl")
    return counts
