"""`seglab models` and `seglab attention` for the model zoo."""

import pytest
import torch
from PIL import Image

from seglab import cli
from seglab.attention import patch_attention
from seglab.checkpoint import save_checkpoint
from seglab.models import build_model


def test_models_table_lists_every_model_with_counts(models_listing):
    out = models_listing  # the output of `seglab models` (conftest.py)
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert "86,284,806" in lines["vit"] and "85.89%" in lines["vit"]
    assert "3,714,915" in lines["segformer-b0"]
    assert "15,274,892" in lines["segnet"] and "1,749,671" in lines["segnet-dsc"]
    # GFLOPs grow 16x from 128 to 512 for a CNN (every layer scales with the pixel count).
    g128, g512 = (float(v) for v in lines["segnet"].split()[2:4])
    assert g512 / g128 == pytest.approx(16.0, rel=1e-3)


def _checkpoint(tmp_path, name, **overrides):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, image_size=64, **overrides)
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, model, {"model": model.seglab_spec, "epoch": 0, "image_size": 64})
    return path


@pytest.mark.parametrize("name, overrides, blocks, labels", [
    ("vit", dict(embed_size=32, num_blocks=3, num_heads=4, patch_size=8), "0,2", ["block 0", "block 2"]),
    ("segformer-b0", {}, "0.1,3.1", ["stage 0 block 1", "stage 3 block 1"]),
])
def test_attention_figure_for_vit_and_segformer(tmp_path, capsys, name, overrides, blocks, labels):
    ckpt = _checkpoint(tmp_path, name, **overrides)
    Image.new("RGB", (80, 50), (10, 200, 30)).save(tmp_path / "img.jpg")
    out = tmp_path / "att.png"
    assert cli.main(["attention", str(ckpt), str(tmp_path / "img.jpg"), "--patch", "1,1", "--blocks", blocks,
                     "--out", str(out), "--device", "cpu"]) == 0
    assert out.is_file() and Image.open(out).size[0] > 200
    printed = capsys.readouterr().out
    assert all(label in printed for label in labels)


def test_attention_maps_are_distributions():
    torch.manual_seed(0)
    vit = build_model("vit", image_size=64, embed_size=32, num_blocks=2, num_heads=4, patch_size=8).eval()
    maps = patch_attention(vit, torch.rand(1, 3, 64, 64), (2, 3))
    for m in maps.values():
        assert m.shape == (4, 8, 8)
        torch.testing.assert_close(m.sum(dim=(1, 2)), torch.ones(4))
    seg = build_model("segformer-b0", image_size=64).eval()
    maps = patch_attention(seg, torch.rand(1, 3, 64, 64), (1, 0))
    assert [tuple(m.shape) for m in maps.values()] == [(1, 2, 2), (2, 2, 2), (5, 2, 2), (8, 2, 2)]
    for m in maps.values():
        torch.testing.assert_close(m.sum(dim=(1, 2)), torch.ones(m.shape[0]))


def test_attention_rejects_bad_patch_and_cnn(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "vit", embed_size=32, num_blocks=1, num_heads=2, patch_size=8)
    Image.new("RGB", (64, 64)).save(tmp_path / "img.png")
    assert cli.main(["attention", str(ckpt), str(tmp_path / "img.png"), "--patch", "9,0", "--device", "cpu",
                     "--out", str(tmp_path / "a.png")]) == 2
    assert "outside the 8x8 patch grid" in capsys.readouterr().err
    cnn = _checkpoint(tmp_path, "segnet-dsc")
    assert cli.main(["attention", str(cnn), str(tmp_path / "img.png"), "--patch", "0,0", "--device", "cpu",
                     "--out", str(tmp_path / "a.png")]) == 2
    assert "vit* and segformer-*" in capsys.readouterr().err


def test_trace_figure_is_written(tmp_path, capsys):
    out = tmp_path / "journey.png"
    assert cli.main(["trace", "--model", "vit", "--embed-size", "64", "--num-heads", "2", "--num-blocks", "3",
                     "--figure", str(out)]) == 0
    assert "(1,64,768)" in capsys.readouterr().out
    img = Image.open(out)
    assert img.size[1] > img.size[0] > 300  # a tall column of boxes
