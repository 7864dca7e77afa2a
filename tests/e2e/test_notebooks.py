"""Every notebook runs end to end on a real Jupyter kernel (nbclient), with its parameter
cell replaced by small settings: it starts a local cluster, runs its pipeline and analyses
and plots the returned DataTree."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support import ROOT

pytestmark = pytest.mark.slow  # each notebook runs a pipeline on a real kernel and cluster

NOTEBOOKS = ROOT / "notebooks"

SMALL = {
    "01_quickstart": "EPOCHS = 1\nIMAGE_SIZE = 8\nN_WORKERS = 1",  # its two tasks run one after the other
    "02_stkd": ("TEMPERATURES = [2, 8]\nSEEDS = [0, 1]\nLOSSES = ['hkd']\nEPOCHS = 1\nTEACHER_EPOCHS = 1\n"
                "STUDENT = 'wrn_16_1'\nIMAGE_SIZE = 8\nN_WORKERS = 2"),
    "03_blockwise": "LAYERS = ['layer1.0.conv1', 'layer4.1.conv2']\nEPOCHS = 1\nTEACHER_EPOCHS = 1\nIMAGE_SIZE = 8\nN_WORKERS = 2",
    "04_pruning_svcca": ("METHODS = ['magnitude', 'random']\nSPARSITIES = [0.3, 0.9]\nSEEDS = [0]\nEPOCHS = 1\n"
                         "IMAGE_SIZE = 8\nPROBE = 64\nN_WORKERS = 2"),
    # long enough that the grid is still training when the notebook cancels it
    "05_interactive_session": "EPOCHS = 1\nSTUDENT_EPOCHS = 6\nIMAGE_SIZE = 8\nN_WORKERS = 2",
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_executes(name, tmp_path):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    params = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters'"
    params[0].source = SMALL[name] + f"\nOUT = {str(tmp_path / 'run')!r}"
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "dashboard: http://127.0.0.1:" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook draws its plots"
    assert (tmp_path / "run" / "results.zarr").is_dir()
    if name == "05_interactive_session":  # the interactive story really happened
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), "the widget"
        assert "while the study is running" in text  # the notebook computed while the study ran
        assert "cancelled" in text  # the grid was cancelled mid-training ...
        assert "teacher        reused 1, ran 0" in text  # ... and the re-submission reused the teacher
        assert "kd             reused 0, ran 2, failed 0, cancelled 0" in text  # and finished the grid
