"""Where a training step's time goes: torch.profiler's top operators for seglab's step and its peer's.

    python benchmarks/profile_step.py --model vit --amp off --batch 4 --threads 1
    python benchmarks/profile_step.py --model segformer-b0 --batch 8

Writes benchmarks/results/profile-<model>-<device>[-tag].txt: for each contender (seglab at --amp, and the peer
of benchmarks/throughput.py) the step time and the operators sorted by self time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.throughput import Settings, build_contenders, decode_once, load_pairs  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--amp", default="off", help="seglab's precision: off, bf16 or auto")
    p.add_argument("--steps", type=int, default=2, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(common.RESULTS))
    p.add_argument("--tag", default="")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = common.resolve_device(a.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    settings = Settings(models=[a.model], sizes=[a.size], batch=a.batch, amps=[a.amp], device=a.device, samples=32)
    env = common.environment(device)
    lines = [f"profile of one training step: {a.model} at {a.size}x{a.size}, batch {a.batch}",
             common.settings_line(env), "command: python benchmarks/profile_step.py " +
             " ".join(sys.argv[1:] if argv is None else argv), ""]
    with tempfile.TemporaryDirectory(prefix="seglab-profile-") as tmp:
        pairs = load_pairs(settings, Path(tmp))
        data = decode_once(pairs, a.size)
        for make in build_contenders(a.model, a.size, a.batch, settings, device, pairs, data):
            c = make()
            for _ in range(2):
                c.step()
            c.finish()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                c.step()
            c.finish()
            per_step = (time.perf_counter() - t0) / a.steps
            with profile(activities=activities) as prof:
                for _ in range(a.steps):
                    c.step()
                c.finish()
            table = prof.key_averages().table(sort_by=sort, row_limit=a.rows, max_name_column_width=60)
            lines += [f"== {c.name}: {per_step * 1000:.0f} ms per step ({a.batch / per_step:.2f} img/s), "
                      f"{a.steps} steps profiled", table, ""]
            print(lines[-3], flush=True)
            del c
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"profile-{a.model}-{device.type}" + (f"-{a.tag}" if a.tag else "") + ".txt")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
