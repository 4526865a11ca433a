"""The notebooks run top to bottom on a real run, and are committed without outputs."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["judge_accuracy.ipynb", "iteration_details.ipynb"]
KERNEL = "python3"


def runs_this_python(argv: list[str]) -> bool:
    """Whether a kernel command starts this interpreter (jupyter_client maps a bare ``python``
    to ``sys.executable``), so that the kernel imports the selfreward under test."""
    return argv[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}", sys.executable)


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def kernel_env(run_dir, tmp_path_factory):
    """Environment for the kernel: the run's paths, and a ``python3`` kernel spec for this
    interpreter in a temporary JUPYTER_PATH when the installed one is missing or starts another
    Python (nothing is downloaded)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELFREWARD_RUN_DIRS", str(run_dir))
        mp.setenv("SELFREWARD_RUN_DIR", str(run_dir))
        mp.setenv("SELFREWARD_MODEL", "2")
        specs = KernelSpecManager()
        if KERNEL not in specs.find_kernel_specs() or not runs_this_python(specs.get_kernel_spec(KERNEL).argv):
            jupyter_path = tmp_path_factory.mktemp("jupyter")
            spec_dir = jupyter_path / "kernels" / KERNEL
            spec_dir.mkdir(parents=True)
            spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python 3 (selfreward tests)", "language": "python"}
            (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
            mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter_path),
                                                                   os.environ.get("JUPYTER_PATH")])))
        yield


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_a_real_run(name, kernel_env):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook drew no figure"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
