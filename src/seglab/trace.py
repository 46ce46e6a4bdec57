"""The journey of a tensor through a model (the article's Figure 7), measured with forward hooks.

Each step is a direct child of the model, with ModuleList / Sequential children opened one level, so the rows
follow the model's own structure; shapes and parameter counts are read off the real modules during a forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TraceRow:
    step: str
    module: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int


def _steps(model: nn.Module) -> list[tuple[str, nn.Module]]:
    steps: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)) and len(child) > 0:
            steps += [(f"{name}.{i}", m) for i, m in child.named_children()]
        else:
            steps.append((name, child))
    return steps


def _shape(t: object) -> tuple[int, ...]:
    if torch.is_tensor(t):
        return tuple(t.shape)
    if isinstance(t, (tuple, list)) and t and torch.is_tensor(t[0]):
        return tuple(t[0].shape)
    return ()


@torch.no_grad()
def trace_model(model: nn.Module, image_size: int | tuple[int, int] = 128, batch: int = 1) -> list[TraceRow]:
    """Run one forward of a (batch, 3, H, W) input and record each step's input and output shapes, in call order."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    rows: list[TraceRow] = []
    handles = []
    for name, module in _steps(model):
        def hook(mod: nn.Module, args: tuple, out: object, name: str = name) -> None:
            rows.append(TraceRow(name, mod.__class__.__name__, _shape(args), _shape(out),
                                 sum(p.numel() for p in mod.parameters())))
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, 3, h, w, device=next(model.parameters()).device)
        out = model(x)
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    rows.insert(0, TraceRow("input", "", tuple(x.shape), tuple(x.shape), 0))
    rows.append(TraceRow("output", "", _shape(out), _shape(out), sum(p.numel() for p in model.parameters())))
    return rows


def format_trace(rows: list[TraceRow]) -> str:
    """A plain-text table: step, module, input shape, output shape, parameters."""
    fmt = lambda s: "(" + ",".join(map(str, s)) + ")"  # noqa: E731
    table = [("step", "module", "input", "output", "params")]
    table += [(r.step, r.module, fmt(r.input_shape), fmt(r.output_shape), f"{r.params:,}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = ["  ".join(c.ljust(wd) if i < 4 else c.rjust(wd) for i, (c, wd) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def model_flops(model: nn.Module, image_size: int, batch: int = 1) -> int:
    """FLOPs of one forward at (batch, 3, image_size, image_size), counted by torch.utils.flop_counter.

    A multiply-add counts as 2 FLOPs (papers that quote "FLOPs" for SegFormer count multiply-adds, i.e. half).
    Runs on whatever device the model is on; on the "meta" device nothing is computed.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, image_size, image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())
