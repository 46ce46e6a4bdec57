import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_data_home(tmp_path_factory, monkeypatch):
    """Caches and downloads go to a temporary SEGLAB_DATA, never to the user's ~/.cache."""
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path_factory.getbasetemp() / "seglab-data"))


@pytest.fixture(scope="session")
def models_listing() -> str:
    """The output of `seglab models` (about 10 s: FLOPs of every model at two sizes), computed once per session."""
    import contextlib
    import io

    from seglab import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["models"]) == 0
    return out.getvalue()
