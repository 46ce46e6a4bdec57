"""Prediction at scale: memory stays flat whatever the folder size, --skip-existing resumes, and under torchrun
two processes predict every image exactly once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.predict import predict

SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_photos(folder: Path, count: int, size: int = 256) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    base = np.stack([xx, yy, (xx + yy) // 2], -1)
    paths = []
    for i in range(count):
        img = (base + rng.integers(0, 60, 3)).clip(0, 255).astype(np.uint8)
        paths.append(folder / f"p{i:04d}.jpg")
        Image.fromarray(img).save(paths[-1], quality=80)
    return paths


_PEAK = """
import resource, sys
from seglab.predict import predict
res = predict(sys.argv[1], [sys.argv[2]], out_dir=sys.argv[3], batch_size=16, device="cpu", quiet=True, keep=False)
print(res.count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # peak RSS in kB (Linux)
"""


def _peak_rss_kb(checkpoint: Path, folder: Path, out: Path) -> tuple[int, int]:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _PEAK, str(checkpoint), str(folder), str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    count, kb = r.stdout.split()[-2:]
    return int(count), int(kb)


def test_memory_stays_flat_with_the_number_of_images(tiny_vit_checkpoint, tmp_path):
    """100 vs 400 photos of 160x160: holding them all would add ~300 x (77 kB image + 26 kB mask) = ~30 MB."""
    photos = make_photos(tmp_path / "all", 400, size=160)
    few = tmp_path / "few"
    few.mkdir()
    for p in photos[:100]:
        os.link(p, few / p.name)
    n_few, rss_few = _peak_rss_kb(tiny_vit_checkpoint, few, tmp_path / "out_few")
    n_all, rss_all = _peak_rss_kb(tiny_vit_checkpoint, tmp_path / "all", tmp_path / "out_all")
    assert (n_few, n_all) == (100, 400)
    assert len(list((tmp_path / "out_all").glob("*_mask.png"))) == 400
    growth_mb = (rss_all - rss_few) / 1024
    print(f"peak RSS: 100 images {rss_few / 1024:.0f} MB, 400 images {rss_all / 1024:.0f} MB, "
          f"growth {growth_mb:.1f} MB")
    assert growth_mb < 12, (rss_few, rss_all)


def test_skip_existing_resumes_an_interrupted_run(tiny_vit_checkpoint, tmp_path):
    make_photos(tmp_path / "in", 6, size=40)
    out = tmp_path / "out"
    first = predict(tiny_vit_checkpoint, [tmp_path / "in"], out_dir=out, batch_size=4, device="cpu", quiet=True)
    assert first.count == 6
    (out / "p0002_overlay.png").unlink()  # as if killed between this image's mask and its overlay
    (out / "p0005_mask.png").unlink()
    (out / "p0005_overlay.png").unlink()
    again = predict(tiny_vit_checkpoint, [tmp_path / "in"], out_dir=out, batch_size=4, device="cpu", quiet=True,
                    skip_existing=True)
    assert again.count == 2 and again.existing == 4
    assert sorted(p.path.stem for p in again) == ["p0002", "p0005"]
    assert len(list(out.glob("*.png"))) == 12 and not list(out.glob(".*"))  # no temporary file left behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RANKED = """
import json, os, sys
from seglab.predict import predict
res = predict(sys.argv[1], [sys.argv[2]], out_dir=sys.argv[3], batch_size=3, device="cpu", quiet=True)
with open(os.path.join(sys.argv[4], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(sorted(p.path.name for p in res), f)
"""


@pytest.mark.parametrize("model", ["checkpoint", "onnx"])
def test_two_processes_under_torchrun_predict_every_image_once(model, tiny_vit_checkpoint, tiny_vit_onnx, tmp_path):
    photos = make_photos(tmp_path / "in", 11, size=40)
    script = tmp_path / "ranked.py"
    script.write_text(_RANKED)
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    path = tiny_vit_checkpoint if model == "checkpoint" else tiny_vit_onnx
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(_free_port()), str(script), str(path),
                        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    shares = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])  # both worked, no image twice
    assert sorted(shares[0] + shares[1]) == [p.name for p in photos]  # every image once
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 11
