"""ONNX export: one self-contained .onnx file with dynamic shapes, seglab's metadata and a checked parity.

export_onnx() captures the model with torch.export (the graph capture behind torch.onnx.export's dynamo-based
exporter, the one PyTorch recommends and torch 2.13's default), translates it to ONNX with onnxscript, runs the
ONNX checker, writes the metadata that onnx_runtime.py needs to serve the file without torch, and compares ONNX
Runtime's logits with PyTorch's on CPU at the example size and at an odd size.

Traps handled here, reproduced on seglab's own models:
- The batch axis: an example batch of 1 lets the exporter treat the batch as the constant 1; the example has 2
  images and the batch is declared dynamic.
- Height and width: a Python `if` on the input's size in a model's forward (a conditional pad, "use the stored
  position embedding when the grid is the trained one") is frozen at the example's branch and its runtime check
  dropped: SegFormer exported at 64x64 with its old `if pad:` was off by 1e-2 at 75x100, with no error. seglab's
  models avoid such branches; export_onnx() also verifies it: the graph must give PyTorch's logits at an odd size
  (not a multiple of 2, 16 or 32), else it is exported again with a fixed height and width (recorded in the
  metadata; onnx_runtime.py resizes every image to that size anyway), so the file is never silently wrong.
- One file: external_data=False keeps the weights inside the .onnx (fine below ONNX's 2 GB protobuf limit; the
  largest seglab model, SegFormer-B5, is ~340 MB in fp32).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import SeglabError
from .palette import palette

INPUT_NAME = "images"  # (B, 3, H, W) float32 in [0, 1]
OUTPUT_NAME = "logits"  # (B, C, H, W) float32
METADATA_PREFIX = "seglab."
# Opset 18 is what torch 2.13's dynamo exporter emits by default and the lowest it fully supports (its
# onnxscript translations use opset-18 forms of Resize/Pad/ReduceMean); ONNX Runtime >= 1.14 runs it.
DEFAULT_OPSET = 18


@dataclass
class ExportReport:
    """What export_onnx() wrote and measured."""

    path: Path
    model: str
    opset: int
    dynamic_hw: bool  # True: any height and width run; False: fixed at image_size (the model specialises on it)
    parity: dict[str, float] = field(default_factory=dict)  # "BxHxW" -> max |onnxruntime - torch| of the logits
    seconds: float = 0.0
    size_mb: float = 0.0
    fallback_reason: str = ""


def _load(model_or_checkpoint: nn.Module | str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on CPU, header-like dict) from a model or a checkpoint / run directory."""
    if isinstance(model_or_checkpoint, nn.Module):
        model = model_or_checkpoint
        spec = getattr(model, "seglab_spec", None)
        if spec is None:
            raise SeglabError("export_onnx needs a model built by seglab.build_model (it carries seglab_spec) or a "
                              "checkpoint path")
        return model.cpu().eval(), {"model": spec}
    from .checkpoint import load_model

    model, header = load_model(model_or_checkpoint, "cpu")
    return model.eval(), header


def _metadata(model: nn.Module, header: dict[str, Any], class_names: list[str] | None, image_size: int,
              interpolation: str, dynamic_hw: bool, opset: int) -> dict[str, str]:
    spec = header["model"]
    num_classes = int(spec["num_classes"])
    names = list(class_names or header.get("class_names") or [f"class {i}" for i in range(num_classes)])
    if len(names) != num_classes:
        raise SeglabError(f"{len(names)} class names given for a model with {num_classes} classes")
    colors = palette(num_classes)[:num_classes].tolist()
    meta = {
        "model": spec["name"],
        "model_spec": json.dumps(spec),
        "num_classes": str(num_classes),
        "class_names": json.dumps(names),
        "colors": json.dumps(colors),
        "image_size": str(image_size),
        "interpolation": interpolation,
        # How the model saw images in training (inference.Geometry): whole / slide / TTA read it.
        "geometry": json.dumps(dict(header.get("geometry") or {"protocol": "article", "interpolation": interpolation},
                                    image_size=image_size)),
        # What the model's input is: RGB pixels / 255, no mean or std (a model that wants ImageNet statistics,
        # such as SegFormer with normalize=True, applies them inside its graph).
        "normalization": json.dumps({"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                     "layout": "NCHW", "channels": "RGB"}),
        "parameters": str(sum(p.numel() for p in model.parameters())),
        "dynamic_hw": "true" if dynamic_hw else "false",
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "opset": str(opset),
        "exported_with": f"torch {torch.__version__}",
    }
    return {METADATA_PREFIX + k: v for k, v in meta.items()}


def _capture(model: nn.Module, example: torch.Tensor, dynamic_hw: bool) -> torch.export.ExportedProgram:
    # Dim.AUTO, not strict named Dims: with a strict Dim("height"), torch.export refuses even seglab's shape-free
    # models, because its symbolic solver cannot prove guards such as ((H + (-H % 16)) // 16) * 16 == H + (-H % 16)
    # that hold for every H. AUTO accepts them, at the price of also accepting a real branch on the size silently;
    # export_onnx() therefore checks the result at an odd size and falls back to a fixed size when it differs.
    dims = {0: torch.export.Dim.AUTO}  # the example's batch is 2, so the batch axis is never taken for a constant 1
    if dynamic_hw:
        dims.update({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO})
    # strict=False: trace with Python itself rather than TorchDynamo's bytecode analysis, as torch.onnx.export
    # does first by default; it is faster and handles seglab's dataclass configs.
    return torch.export.export(model, (example,), dynamic_shapes=(dims,), strict=False)


def _odd_size(size: int) -> tuple[int, int]:
    """A height and width unlike the training size and not multiples of 2, 16 or 32 (at least 33)."""
    return max(33, (size * 5 // 8) | 1), max(35, (size * 3 // 4 + 5) | 1)


def _key(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, (shape[0], *shape[2:])))  # "BxHxW"


def parity(onnx_path: str | Path, model: nn.Module, shape: tuple[int, int, int, int], seed: int = 0) -> float:
    """Max |ONNX Runtime - PyTorch| of the logits for a random batch of `shape` (B, 3, H, W), on CPU in fp32."""
    import onnx

    return _parity_proto(onnx.load(str(onnx_path)), model, shape, seed)


def _parity_proto(proto: Any, model: nn.Module, shape: tuple[int, int, int, int], seed: int = 0) -> float:
    import onnxruntime as ort

    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x).float().numpy()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    try:
        got = session.run(None, {INPUT_NAME: x.numpy()})[0]
    except Exception:  # noqa: BLE001 - a graph fixed to another size fails inside ONNX Runtime
        return float("inf")
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max())


def _has_dynamic_hw(proto: Any) -> bool:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return all(d.dim_param and not d.HasField("dim_value") for d in dims[2:])


def _export(model: nn.Module, example: torch.Tensor, dynamic_hw: bool, opset: int) -> Any:
    """The ONNX ModelProto of the model (batch dynamic; height and width too if asked)."""
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not about the user's model
        try:
            program = _capture(model, example, dynamic_hw)
            onnx_program = torch.onnx.export(program, (example,), input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME], opset_version=opset, external_data=False,
                                             optimize=True, verbose=False)
        except Exception as e:  # noqa: BLE001 - capture and translation fail in many ways on unsupported code
            name = getattr(model, "seglab_spec", {}).get("name", type(model).__name__)
            raise SeglabError(f"ONNX export of {name} failed ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''})") from None
    return onnx_program.model_proto


def export_onnx(
    model_or_checkpoint: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    interpolation: str | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_hw: bool = True,
    check_parity: bool = True,
    atol: float = 1e-4,
) -> ExportReport:
    """Export a seglab model (or a checkpoint / run directory's best) to one .onnx file; returns an ExportReport.

    Input "images" (B, 3, H, W) float32 in [0, 1], output "logits" (B, C, H, W); the batch is dynamic, and height
    and width are too where the model's graph does not depend on them (else fixed at image_size, and the report
    says why). The file's metadata_props ("seglab.*") carry the model name, class names and colours, image size,
    interpolation, normalisation and parameter count. With check_parity, ONNX Runtime's logits must match
    PyTorch's within atol at the example size and (when dynamic) at an odd size, else SeglabError.
    """
    from .data.io import check_interpolation

    t0 = time.perf_counter()
    model, header = _load(model_or_checkpoint)
    spec = header["model"]
    size = int(image_size or header.get("image_size") or spec["image_size"])
    interpolation = interpolation or header.get("interpolation", "nearest")
    check_interpolation(interpolation)
    path = Path(path)
    if path.suffix != ".onnx":
        raise SeglabError(f"the export path should end in .onnx, not {path.name!r} (--out model.onnx)")
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))  # batch 2: see the docstring

    odd = (1, 3, *_odd_size(size))
    report = ExportReport(path, spec["name"], opset, dynamic_hw)
    # A dynamic graph is traced at 64x64 at least: below, a SegFormer's last stage is 1x1, and torch.export
    # specialises axes of size 1 (they broadcast), which breaks the symbolic shapes of every other size.
    traced = max(size, 64)
    proto = _export(model, torch.rand(2, 3, traced, traced, generator=torch.Generator().manual_seed(0))
                    if dynamic_hw else example, dynamic_hw, opset)
    if dynamic_hw and not _has_dynamic_hw(proto):
        report.dynamic_hw, report.fallback_reason = False, "the exporter fixed the height and width"
    if report.dynamic_hw:
        # The odd-size check runs even with check_parity=False: it decides whether H and W may stay dynamic.
        try:
            diff = _parity_proto(proto, model, odd)
            why = (f"the graph depends on the input size (off by {diff:.3g} at {odd[2]}x{odd[3]} when exported at "
                   f"{traced}x{traced})")
        except Exception as e:  # noqa: BLE001 - the PyTorch model itself refuses that size
            diff, why = float("inf"), f"the model does not run at {odd[2]}x{odd[3]} ({type(e).__name__}: {e})"
        report.parity[_key(odd)] = diff
        if not diff < atol:
            report.dynamic_hw = False
            report.fallback_reason = why
            report.parity.clear()
            proto = _export(model, example, False, opset)
    import onnx

    onnx.helper.set_model_props(proto, _metadata(model, header, class_names, size, interpolation,
                                                 report.dynamic_hw, opset))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise SeglabError(f"the exported ONNX graph of {spec['name']} fails the ONNX checker: {e}") from None
    _save_atomic(proto, path)
    if check_parity:
        # Batch 2 at the trained size, and batch 1 (the batch must not have been fixed at the example's 2).
        for shape in [(2, 3, size, size)] + ([] if report.dynamic_hw else [(1, 3, size, size)]):
            report.parity[_key(shape)] = diff = _parity_proto(proto, model, shape)
            if not diff < atol:
                raise SeglabError(f"{path}: ONNX Runtime's logits differ from PyTorch's by {diff:.3g} (> {atol}) "
                                  f"at {_key(shape)} (batch x height x width); the file was written but should not "
                                  "be trusted")
    report.seconds = time.perf_counter() - t0
    report.size_mb = path.stat().st_size / 2**20
    return report


def _save_atomic(proto: Any, path: Path) -> None:
    """onnx.save through seglab's atomic write: a crash never leaves a torn .onnx behind."""
    import onnx

    from .atomic import atomic_write

    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))


class _quiet_exporter:
    """Silence the exporter's progress lines and its 'torchvision is not installed' warnings for one export."""

    _names = ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes",
              "onnxscript", "onnx_ir")

    def __enter__(self) -> None:
        self._levels = [(lg, lg.level) for lg in map(logging.getLogger, self._names)]
        for lg, _ in self._levels:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        for lg, level in self._levels:
            lg.setLevel(level)
