"""ONNX export: every registered model exports with a dynamic batch, height and width, and ONNX Runtime gives
PyTorch's logits (max abs diff < 1e-4 in fp32) at the training size and at an odd size; seglab's metadata rides
along; a model whose graph depends on the input size is caught, not exported silently wrong; `seglab predict
model.onnx` and the server's app run where torch cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from seglab.errors import SeglabError
from seglab.export import export_onnx, parity
from seglab.models import list_models, model_entry, build_model
from seglab.predict import predict
from seglab.onnx_runtime import OnnxSegmenter

SIZE = 64  # the training size of the tiny models; the odd size is export._odd_size(64) = 41 x 53


_EXPORTED: dict[str, tuple[str, object]] = {}  # architecture -> (first model name, its ExportReport)


def _architecture(model: nn.Module) -> str:
    config = getattr(model, "config", None) or getattr(model, "args", None)
    return f"{type(model).__name__}:{config!r}" if config is not None else f"{type(model).__name__}:{id(model)}"


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_with_dynamic_shapes_and_matches_pytorch(name, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=SIZE, **model_entry(name).tiny).eval()
    # At tiny widths the SegFormer presets b0..b5 (which differ only in widths and depths) are one architecture
    # with the same seeded weights: it is exported once (an export costs ~10-30 s of CPU) and every preset's
    # PyTorch logits are compared with that file.
    arch = _architecture(model)
    if arch in _EXPORTED:
        first, report = _EXPORTED[arch]
        for key in report.parity:
            b, h, w = map(int, key.split("x"))
            report.parity[key] = parity(report.path, model, (b, 3, h, w))
    else:
        path = tmp_path_factory.mktemp("export") / f"{name}.onnx"
        report = export_onnx(model, path, class_names=["pet", "background", "border"])
        _EXPORTED[arch] = (name, report)
        first = name
    assert report.dynamic_hw, report.fallback_reason
    # Batch 2 at the training size, batch 1 at an odd size (41 x 53): neither axis was frozen at export.
    assert set(report.parity) == {f"2x{SIZE}x{SIZE}", "1x41x53"}
    assert all(d < 1e-4 for d in report.parity.values()), report.parity
    proto = onnx.load(str(report.path))
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in dims[:1]) and all(d.dim_param for d in dims[2:])  # B, H, W symbolic
    assert not list(report.path.parent.glob("*.data"))  # one file: the weights are inside
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["seglab.model"] == first and json.loads(meta["seglab.class_names"]) == ["pet", "background", "border"]
    assert int(meta["seglab.parameters"]) == sum(p.numel() for p in model.parameters())


class _BranchOnSize(nn.Module):
    """The export trap: a Python `if` on the input's size (like SegFormer's old conditional pad)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.seglab_spec = {"name": "branchy", "num_classes": 2, "image_size": 32, "overrides": {}}

    def forward(self, x):
        H, W = x.shape[-2:]
        if H % 32 or W % 32:  # frozen at the example's branch by the exporter, its check dropped
            x = F.pad(x, (0, -W % 32, 0, -H % 32), mode="replicate")
        return self.conv(x)[..., :H, :W] * 2


def test_a_graph_that_branches_on_the_size_is_caught_and_exported_at_a_fixed_size(tmp_path):
    torch.manual_seed(0)
    report = export_onnx(_BranchOnSize().eval(), tmp_path / "b.onnx")
    assert not report.dynamic_hw and "depends on the input size" in report.fallback_reason
    assert set(report.parity) == {"2x32x32", "1x32x32"} and max(report.parity.values()) < 1e-5
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "b.onnx")).metadata_props}
    assert meta["seglab.dynamic_hw"] == "false"


def test_export_refuses_a_path_without_onnx_suffix(tiny_vit_checkpoint, tmp_path):
    with pytest.raises(SeglabError, match="model.onnx"):
        export_onnx(tiny_vit_checkpoint, tmp_path / "model.bin")


def _photos(folder: Path, sizes=((47, 61), (32, 32), (90, 40))) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1) + rng.integers(0, 40, (h, w, 3))
        paths.append(folder / f"img{i}.png")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def test_onnx_metadata_and_masks_match_the_checkpoint(tiny_vit_checkpoint, tiny_vit_onnx, tmp_path):
    seg = OnnxSegmenter(tiny_vit_onnx)
    assert (seg.name, seg.class_names, seg.image_size, seg.interpolation) == (
        "vit", ["pet", "background", "border"], 32, "bilinear")
    assert seg.dynamic_hw and seg.parameters > 0 and len(seg.colors) == 3
    _photos(tmp_path / "in")
    by_torch = predict(tiny_vit_checkpoint, [tmp_path / "in"], device="cpu", quiet=True)
    by_onnx = predict(tiny_vit_onnx, [tmp_path / "in"], out_dir=tmp_path / "out", quiet=True)
    for a, b in zip(by_torch, by_onnx):
        assert a.mask.shape == b.mask.shape == (a.image.size[1], a.image.size[0])
        assert (a.mask != b.mask).mean() < 0.002  # the same masks, up to float rounding at class boundaries
        assert (tmp_path / "out" / f"{b.path.stem}_overlay.png").is_file()


_NO_TORCH = textwrap.dedent("""
    # Makes `import torch` fail, as in an environment where torch is not installed.
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"No module named {name!r} (hidden by the test)")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def test_predict_onnx_runs_where_torch_cannot_be_imported(tiny_vit_onnx, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(_NO_TORCH)
    paths = _photos(tmp_path / "in")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hide), src]))
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "hidden by the test" in probe.stderr
    out = subprocess.run([sys.executable, "-m", "seglab.cli", "predict", str(tiny_vit_onnx), str(tmp_path / "in"),
                          "--out", str(tmp_path / "out"), "--quiet"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for p in paths:
        with Image.open(tmp_path / "out" / f"{p.stem}_mask.png") as m:
            assert m.size == Image.open(p).size
        assert (tmp_path / "out" / f"{p.stem}_overlay.png").is_file()
    # The server too: `seglab serve model.onnx`'s app answers without torch.
    served = subprocess.run([sys.executable, "-c", _SERVE_WITHOUT_TORCH, str(tiny_vit_onnx), str(paths[0])], env=env,
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr[-2000:]
    assert served.stdout.split() == ["200", "vit", "False"]


_SERVE_WITHOUT_TORCH = """
import sys
from fastapi.testclient import TestClient
from seglab.serve import create_app
client = TestClient(create_app(sys.argv[1]))
with open(sys.argv[2], "rb") as f:
    r = client.post("/predict?format=json", files={"file": ("photo.png", f.read(), "image/png")})
print(r.status_code, r.json()["model"], "torch" in sys.modules)
"""
