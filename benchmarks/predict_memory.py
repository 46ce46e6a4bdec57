"""Peak memory (RSS) and time of `seglab predict` on large photos: sliding windows at the photo's own resolution,
and whole-image prediction of an article-protocol model, both by 21-class models (Pascal VOC's count).

    PYTHONPATH=src python benchmarks/predict_memory.py [--sizes 2000x1500,8000x6000] [--crop 512]

Each row is one `seglab predict` process measured by /usr/bin/time (%M: peak resident set size, %e: wall time),
writing the mask and overlay at the photo's full size (checked). The models are untrained (random weights): memory
and time do not depend on the weights. slide: fpn-efficientnet-lite0 with a `original` geometry (crop CROP x CROP
windows, overlap 0.25, no cap on the long side), so the windows cover the photo at its own resolution. whole:
the same model trained the article's way (128x128 squares): one forward, logits resized back in row chunks.
Results: benchmarks/results/predict_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import RESULTS, environment, load_average, markdown_table, save_results  # noqa: E402
from seglab.checkpoint import save_checkpoint  # noqa: E402
from seglab.inference import Geometry  # noqa: E402
from seglab.models import build_model  # noqa: E402

NUM_CLASSES = 21
MODEL = "fpn-efficientnet-lite0"


def checkpoint(folder: Path, geometry: Geometry, name: str) -> Path:
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=NUM_CLASSES, image_size=geometry.image_size).eval()
    path = folder / f"{name}.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec, "epoch": 1, "image_size": geometry.image_size,
                                  "interpolation": geometry.interpolation, "geometry": geometry.to_dict(),
                                  "class_names": [f"class {i}" for i in range(NUM_CLASSES)]})
    return path


def photo(path: Path, w: int, h: int) -> None:
    """A smooth colour field with noise, as a JPEG (a photo's decode cost, not a flat image's)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(2, h // 200), max(2, w // 200), 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
    big = np.clip(big + rng.integers(-12, 13, big.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    Image.fromarray(big).save(path, quality=90)


def measure(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one `seglab ...` process."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "seglab.cli", *args],
                         capture_output=True, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise SystemExit(f"seglab {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    kb, secs = out.stderr.strip().splitlines()[-1].split()
    return int(kb) / 1024, float(secs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="2000x1500,8000x6000", help="photo sizes WxH")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args()
    env = environment(torch.device("cpu"))
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slide = checkpoint(tmp, Geometry(protocol="original", image_size=args.crop, crop_size=(args.crop, args.crop),
                                         interpolation="bilinear"), "slide")
        whole = checkpoint(tmp, Geometry(protocol="article", image_size=128, interpolation="bilinear"), "whole")
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            image = tmp / f"photo_{w}x{h}.jpg"
            photo(image, w, h)
            for mode, ckpt in (("slide", slide), ("whole", whole)):
                out = tmp / f"out-{mode}-{w}x{h}"
                load = load_average()
                mb, secs = measure(["predict", str(ckpt), str(image), "--out", str(out), "--mode", mode, "--quiet"])
                mask = Image.open(out / f"{image.stem}_mask.png")
                assert mask.size == (w, h), mask.size
                what = (f"slide, {args.crop}x{args.crop} windows at full resolution" if mode == "slide"
                        else "whole, 128x128 article view")
                rows.append([f"{w}x{h}", what, f"{mb:,.0f}", f"{secs:.1f}", f"{mask.size[0]}x{mask.size[1]}",
                             load[0] if load else "n/a"])
                records.append({"size": [w, h], "mode": mode, "peak_rss_mb": mb, "seconds": secs, "load": load})
                print(rows[-1], flush=True)
    table = markdown_table(["photo", "mode", "peak RSS (MB)", "wall (s)", "mask written", "load at start"], rows)
    header = (f"# seglab predict on large photos: {MODEL}, {NUM_CLASSES} classes, CPU\n\n{env['device_name']}, "
              f"torch {env['torch']}, commit {env['git_commit'][:12]}, {env['date']}\n\nCommand: `PYTHONPATH=src "
              f"python benchmarks/predict_memory.py --sizes {args.sizes} --crop {args.crop}`\n\n")
    print(header + table)
    save_results({"environment": env, "rows": records, "model": MODEL, "num_classes": NUM_CLASSES},
                 header + table, args.out_dir, "predict_memory")


if __name__ == "__main__":
    main()
