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


# ---- deploy (issue 10): a tiny trained-looking checkpoint and its ONNX export, shared by the deploy tests ----
DEPLOY_CLASSES = ["pet", "background", "border"]


@pytest.fixture(scope="session")
def tiny_vit_checkpoint(tmp_path_factory):
    """A tiny ViT checkpoint (32x32 input, 8x8 patches, bilinear resize) with the Oxford-IIIT Pet class names."""
    from seglab.checkpoint import save_checkpoint
    from seglab.models import build_model

    torch.manual_seed(0)
    model = build_model("vit", num_classes=3, image_size=32, patch_size=8, embed_size=16, num_blocks=1, num_heads=2)
    path = tmp_path_factory.mktemp("deploy") / "tiny.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec, "epoch": 1, "image_size": 32,
                                  "interpolation": "bilinear", "class_names": DEPLOY_CLASSES})
    return path


@pytest.fixture(scope="session")
def tiny_vit_onnx(tiny_vit_checkpoint):
    """tiny_vit_checkpoint exported to ONNX (once per session: an export takes seconds)."""
    from seglab.export import export_onnx

    path = tiny_vit_checkpoint.with_suffix(".onnx")
    export_onnx(tiny_vit_checkpoint, path)
    return path
