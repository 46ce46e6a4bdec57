"""examples/quickstart.ipynb runs from top to bottom in a fresh kernel, and shows its pictures."""

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    src = str(Path(__file__).resolve().parents[1] / "src")  # the kernel imports this checkout's seglab
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert time.perf_counter() - t0 < 120
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the grid and the overlay
    text = "".join(o.get("text", "") for o in outputs)
    assert "epoch 3:" in text and "mask shape: (96, 96)" in text
    assert (tmp_path / "runs" / "quickstart" / "checkpoints" / "best.safetensors").exists()
    assert (tmp_path / "predicted" / "photo_mask.png").exists()
