"""How long `seglab data inspect` takes on a generated folder of N images with binary 0/255 PNG masks.

    python benchmarks/inspect_speed.py --count 1000 --size 320x240 --out /tmp/inspect-bench

Writes the folder once (photos as JPEG, masks as 0/255 PNG), then times a first inspection (mask scan, decode,
resize into the cache, header reads, preview) and a second one (everything from the cache), each in a fresh
process through the CLI, so the timings include Python and torch start-up. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, count: int, w: int, h: int) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(count):
        cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.15, 0.35) * min(w, h)
        fg = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        img[fg] += np.array([150, 90, 20], dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"photo_{i:05d}.jpg", quality=85)
        Image.fromarray(fg.astype(np.uint8) * 255).save(root / "masks" / f"photo_{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--out", default="/tmp/inspect-bench")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    root = out / f"folder-{args.count}-{w}x{h}"
    if not (root / "masks" / f"photo_{args.count - 1:05d}.png").exists():
        make_folder(root, args.count, w, h)
    env = dict(os.environ, SEGLAB_DATA=str(out / "seglab-data"))
    cmd = [sys.executable, "-m", "seglab.cli", "data", "inspect", str(root), "--out", str(out / "report")]
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            sys.exit(done.stderr)
    print(done.stdout)
    print(json.dumps({"count": args.count, "size": [w, h], "first_s": round(times[0], 2),
                      "second_s": round(times[1], 2), "cpus": os.cpu_count(), "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
