"""Shared pieces of the benchmarks: the environment record, timing, peak memory, FLOPs, results files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE_DATA = ROOT.parent / "shared" / "data" / "oxford-iiit-pet-sample"


# ---------------------------------------------------------------------------------------------------------
# What ran where


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_native() -> bool:
    """True when this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()} ({cores} cores, {torch.get_num_threads()} torch threads)"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cpu":
        env["cpu_bf16_native"] = cpu_bf16_native()
        try:
            env["load_average"] = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            pass
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    return env


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: on a shared machine, what else was running."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------------------
# Timing and memory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _trim() -> None:
    """Collect garbage and hand the allocator's free memory back to the OS (glibc's malloc_trim), so that the
    resident set grows again when the next contender allocates instead of reusing pages freed earlier."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory while the block runs, above what was in use when it started, in MiB.

    CUDA: torch.cuda.max_memory_allocated (exact, tensors only). CPU: the process's resident set sampled every
    2 ms by a thread, after handing freed memory back to the OS (approximate: memory the allocator keeps is
    not seen again, so it can under-count).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _trim()
            self._base = _rss_bytes()
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.mib = (peak - self._base) / 2**20


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each contender's timed block once per round, alternating the order every round, so that a load
    that comes and goes on a shared machine falls on all of them alike. Each callable returns a rate."""
    out: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(contenders[name]())
    return out


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": [round(v, 4) for v in values]}


# ---------------------------------------------------------------------------------------------------------
# FLOPs and MFU


def train_step_flops(forward: Callable[[], torch.Tensor], target: torch.Tensor) -> int:
    """FLOPs of one training step (forward + backward; the optimizer's elementwise work is not counted),
    counted by torch.utils.flop_counter.FlopCounterMode on matmuls, convolutions and attention.

    Convolutions' backward is counted as 2x their forward: FlopCounterMode's formula for convolution_backward
    ignores groups, so it counts a depthwise conv's weight gradient C times over (29x the forward for
    SegFormer-B0 at 128x128, against the ~2x the backward of a convolution takes)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        logits = forward()
        loss = F.cross_entropy(logits.float(), target, ignore_index=255)
        loss.backward()
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    conv = counts.pop("aten.convolution", 0)
    counts.pop("aten.convolution_backward", None)
    return int(sum(counts.values()) + 3 * conv)


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int | None = None, seconds: float = 1.0) -> float:
    """Measured dense matmul rate (FLOP/s) of this device in `dtype`: the denominator of MFU here."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        sync(device)
        if time.perf_counter() - t0 > seconds and reps >= 3:
            break
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------
# Results


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if v != v else (f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}")
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save_results(payload: dict[str, Any], markdown: str, out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write out_dir/stem.json and out_dir/stem.md; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def settings_line(env: dict[str, Any]) -> str:
    parts = [env["device_name"], f"torch {env['torch']}"]
    if "transformers" in env:
        parts.append(f"transformers {env['transformers']}")
    parts += [f"commit {env['git_commit'][:12]}", env["date"]]
    if "load_average" in env:
        parts.append(f"load average at start {env['load_average'][0]}")
    return ", ".join(parts)
