"""Smoke tests of the benchmark scripts: they import, measure a step or two of tiny models, and write JSON and
markdown of the documented shape. Nothing here is timed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_SEGNET = {"widths": [8, 16], "depths": [1, 1]}
TINY_VIT = {"embed_size": 32, "num_blocks": 1, "num_heads": 2}


def _quiet(_: str) -> None:
    pass


def test_naive_vit_matches_seglab_parameters():
    from benchmarks.naive import ArticleViT
    from seglab import build_model

    naive, ours = ArticleViT(image_size=32, patch_size=8, embed_size=32, num_blocks=1, num_heads=2), \
        build_model("vit-small", image_size=32, **TINY_VIT)
    assert sum(p.numel() for p in naive.parameters()) == sum(p.numel() for p in ours.parameters())


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared machine, tiny ops on 2 threads wait on each other for whole time slices."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_throughput_measures_and_writes(tmp_path, one_thread):
    from benchmarks.throughput import Settings, run

    models = ["vit-small", "segnet"]
    if importlib.util.find_spec("transformers") is not None:
        models.append("segformer-b0")
    settings = Settings(models=models, sizes=[32], batch=2, infer_batch=2, steps=1, warmup=1, rounds=1,
                        infer_reps=1, samples=2, amps=["off"], device="cpu", jpeg_size=40, matmul_size=64,
                        model_options={"segnet": TINY_SEGNET, "vit-small": TINY_VIT})
    result = run(settings, out_dir=tmp_path, tag="t", log=_quiet)
    saved = json.loads((tmp_path / "throughput-cpu-t.json").read_text())
    assert (tmp_path / "throughput-cpu-t.md").read_text().startswith("Throughput on ")
    assert saved["benchmark"] == "throughput"
    for key in ("device_name", "torch", "git_commit", "date"):
        assert saved["environment"][key]
    assert [c["model"] for c in saved["cases"]] == models
    for case in result["cases"]:
        roles = [c["role"] for c in case["contenders"]]
        assert roles.count("peer") == 1 and "seglab" in roles
        for c in case["contenders"]:
            assert c["train_flops_per_image"] > 0
            for key in ("train_images_per_s", "infer_b1_images_per_s", "infer_batch_images_per_s"):
                assert c[key]["median"] > 0 and len(c[key]["rounds"]) == 1
            assert c["latency_b1_ms"] > 0 and c["train_ratio"] > 0
    peers = {c["model"]: c["peer"] for c in saved["cases"]}
    assert peers["vit-small"].startswith("article notebook") and peers["segnet"].startswith("same CNN")
    if "segformer-b0" in peers:
        assert peers["segformer-b0"].startswith("HF transformers")


def test_time_to_accuracy_reads_history():
    from benchmarks.time_to_accuracy import first_reaching

    history = [{"epoch": e, "pixel_accuracy": a, "n_train": 100, "images_per_s": 50.0, "seconds": 3.0}
               for e, a in ((1, 0.5), (2, 0.87), (3, 0.9))]
    hit = first_reaching(history, 0.8589)
    assert hit == {"reached": True, "epoch": 2, "accuracy": 0.87, "train_seconds": 4.0, "wall_seconds": 6.0}
    miss = first_reaching(history, 0.95)
    assert not miss["reached"] and miss["best_accuracy"] == 0.9 and miss["best_epoch"] == 3


@pytest.mark.parametrize("recipe", ["article", "fast"])
def test_time_to_accuracy_runs_and_writes(tmp_path, recipe, one_thread):
    from benchmarks.time_to_accuracy import run

    args = {"dataset": "synthetic", "device": "cpu", "image_size": 32, "train_samples": 8, "val_samples": 4,
            "batch_size": 4, "eval_batch_size": 4, "max_epochs": 1, "model_options": TINY_SEGNET}
    result = run(["segnet-dsc-head"], [recipe], args, out_dir=tmp_path, tag="t", quick=True, log=_quiet)
    saved = json.loads((tmp_path / "time_to_accuracy-cpu-quick-t.json").read_text())
    assert "tenth of the real trainval" in saved["note"]
    (one,) = result["runs"]
    assert one["recipe_name"] == ("segnet-part2" if recipe == "article" else "fast")
    assert len(one["history"]) == 1 and one["train_flops_per_image"] > 0
    for hit in one["targets"].values():
        assert hit["pflops"] > 0 and hit["train_seconds"] > 0
    assert "not reached" in (tmp_path / "time_to_accuracy-cpu-quick-t.md").read_text() or \
        all(h["reached"] for h in one["targets"].values())
