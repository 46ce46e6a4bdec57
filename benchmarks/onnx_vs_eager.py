"""PyTorch eager vs ONNX Runtime on CPU, per model, in one run: batch-1 latency and batch throughput.

    python benchmarks/onnx_vs_eager.py --models vit-small,segformer-b0,segnet-dsc --size 128 --threads 2
    python benchmarks/onnx_vs_eager.py --quick          # three small models, fewer rounds

Each model is built at its registry defaults (random weights: speed does not depend on them), exported with
seglab.export_onnx (dynamic batch/H/W, parity checked), then timed on the same random input by both engines with
the same number of threads (torch.set_num_threads / ONNX Runtime intra_op_num_threads): eager in eval mode under
inference_mode, ONNX Runtime's CPUExecutionProvider with its default graph optimisations. Timed blocks alternate
the engines' order over --rounds rounds (benchmarks/common.interleaved), after a warm-up; the table gives the
median round. Latency: batch 1, median ms per call; throughput: images/s at --batch.
Results: benchmarks/results/onnx_vs_eager-cpu[-quick][-tag].{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    RESULTS, environment, interleaved, markdown_table, save_results, settings_line, summary,
)
from seglab.export import export_onnx  # noqa: E402
from seglab.models import build_model  # noqa: E402


def _timer(fn, calls: int, images_per_call: int):
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return calls * images_per_call / (time.perf_counter() - t0)  # images/s
    return run


def bench_model(name: str, size: int, batch: int, threads: int, rounds: int, calls: int, tmp: Path) -> dict:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=size).eval()
    t0 = time.perf_counter()
    report = export_onnx(model, tmp / f"{name}.onnx")
    export_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x1 = rng.random((1, 3, size, size), dtype=np.float32)
    xb = rng.random((batch, 3, size, size), dtype=np.float32)
    t1, tb = torch.from_numpy(x1), torch.from_numpy(xb)

    def eager(x):
        with torch.inference_mode():
            return model(x)

    def onnx(x):
        return session.run(None, {"images": x})[0]

    for _ in range(2):  # warm-up: allocator, ONNX Runtime's first-run graph work
        eager(t1), onnx(x1), eager(tb), onnx(xb)
    lat = interleaved({"eager": _timer(lambda: eager(t1), calls, 1), "onnx": _timer(lambda: onnx(x1), calls, 1)},
                      rounds)
    thr = interleaved({"eager": _timer(lambda: eager(tb), max(1, calls // 4), batch),
                       "onnx": _timer(lambda: onnx(xb), max(1, calls // 4), batch)}, rounds)
    row = {"model": name, "size": size, "batch": batch, "parameters": sum(p.numel() for p in model.parameters()),
           "export_s": round(export_s, 1), "onnx_mb": round(report.size_mb, 1), "parity": report.parity,
           "dynamic_hw": report.dynamic_hw}
    for engine in ("eager", "onnx"):
        row[f"{engine}_latency_ms"] = summary([1000 / r for r in lat[engine]])
        row[f"{engine}_images_per_s"] = summary(thr[engine])
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vit-small,segformer-b0,segnet-dsc,vit")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=20, help="batch-1 calls per timed block (batch: a quarter)")
    p.add_argument("--quick", action="store_true", help="vit-small, segformer-b0, segnet-dsc; 3 rounds of 8 calls")
    p.add_argument("--tag", default="")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.rounds, args.calls = "vit-small,segformer-b0,segnet-dsc", 3, 8
    torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            row = bench_model(name, args.size, args.batch, args.threads, args.rounds, args.calls, Path(tmp))
            rows.append(row)
            print(f"{name}: eager {row['eager_latency_ms']['median']:.1f} ms / onnx "
                  f"{row['onnx_latency_ms']['median']:.1f} ms at batch 1; eager "
                  f"{row['eager_images_per_s']['median']:.1f} / onnx {row['onnx_images_per_s']['median']:.1f} "
                  f"images/s at batch {args.batch}", flush=True)
    table = markdown_table(
        ["model", "params", "batch-1 latency eager (ms)", "batch-1 latency ONNX Runtime (ms)", "speed-up",
         f"batch-{args.batch} eager (img/s)", f"batch-{args.batch} ONNX Runtime (img/s)", "speed-up",
         "max abs diff", "export (s)"],
        [[r["model"], f"{r['parameters'] / 1e6:.2f}M", r["eager_latency_ms"]["median"],
          r["onnx_latency_ms"]["median"], r["eager_latency_ms"]["median"] / r["onnx_latency_ms"]["median"],
          r["eager_images_per_s"]["median"], r["onnx_images_per_s"]["median"],
          r["onnx_images_per_s"]["median"] / r["eager_images_per_s"]["median"],
          f"{max(r['parity'].values()):.1e}", r["export_s"]] for r in rows])
    cmd = "python benchmarks/onnx_vs_eager.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = (f"# PyTorch eager vs ONNX Runtime on CPU, {args.size}x{args.size}, {args.threads} threads\n\n"
          f"`{cmd.strip()}`\n\n{settings_line(env)}. Median of {args.rounds} interleaved rounds; the machine may be "
          f"shared (load average at start in the line above).\n\n{table}\n")
    stem = "onnx_vs_eager-cpu" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    json_path, md_path = save_results({"environment": env, "args": vars(args), "rows": rows}, md, args.out_dir, stem)
    print(md)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
