"""Real resolution (issue 17): images at their own size in the cache, random rescale + crop in training, scoring at
the masks' own size, whole / slide / TTA inference in bounded memory, on PyTorch and ONNX Runtime alike."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import seglab.inference as inference
from seglab import cli
from seglab.checkpoint import save_checkpoint
from seglab.config import TrainConfig
from seglab.data import build_dataset
from seglab.data.augment import AugmentConfig, augment_batch
from seglab.data.crops import CropConfig, crop_batch, rescaled_size
from seglab.inference import (Geometry, InferenceConfig, gaussian_weight, parse_tta, resize_bilinear, segment,
                              softmax, upsampled_argmax, view_image, window_starts)
from seglab.models import build_model
from seglab.predict import predict
from seglab.train import train
from test_reliability import cli_error

C = 4
SIZES = [(40, 64), (64, 40), (50, 50), (33, 71), (72, 48), (45, 60)]  # (h, w): several sizes and aspects


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "seglab-data"))


def fake_forward(seed: int = 0):
    """A deterministic stand-in for a model whose output depends on the window position (so blending matters)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((C, 3)).astype(np.float32)

    def forward(x: np.ndarray) -> np.ndarray:
        b, _, h, wd = x.shape
        pos = np.linspace(-1, 1, h * wd, dtype=np.float32).reshape(1, 1, h, wd)
        return np.einsum("ck,bkhw->bchw", w, x) + pos * np.arange(C, dtype=np.float32).reshape(1, C, 1, 1)
    return forward


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- inference.py against direct computations

def direct_slide(img: np.ndarray, forward, window: tuple[int, int], overlap: float) -> np.ndarray:
    """The whole blended map at once (what the streamed version must equal), then resized and argmaxed."""
    view = view_image(img, img.shape[:2], "bilinear", False).transpose(2, 0, 1)
    wh, ww = window
    ph, pw = max(img.shape[0], wh), max(img.shape[1], ww)
    acc = np.zeros((C, ph, pw), np.float32)
    wsum = np.zeros((ph, pw), np.float32)
    g = gaussian_weight(window)
    for y in window_starts(ph, wh, int(wh * (1 - overlap))):
        for x in window_starts(pw, ww, int(ww * (1 - overlap))):
            patch = np.zeros((3, wh, ww), np.float32)
            part = view[:, y:y + wh, x:x + ww]
            patch[:, :part.shape[1], :part.shape[2]] = part / 255.0
            acc[:, y:y + wh, x:x + ww] += forward(patch[None])[0] * g
            wsum[y:y + wh, x:x + ww] += g
    full = (acc / wsum)[:, :img.shape[0], :img.shape[1]]
    return resize_bilinear(full, img.shape[:2]).argmax(0)


@pytest.mark.parametrize("chunk", [inference.CHUNK_FLOATS, 50])
def test_slide_equals_the_direct_blend_and_stays_in_bands(monkeypatch, chunk):
    monkeypatch.setattr(inference, "CHUNK_FLOATS", chunk)
    img = photo(75, 101)
    geometry = Geometry(protocol="original", image_size=32, crop_size=(32, 40))
    got = segment([img], fake_forward(), geometry, InferenceConfig(mode="slide", overlap=0.3, batch_size=3))[0]
    assert got.shape == (75, 101) and got.dtype == np.uint8
    assert np.array_equal(got, direct_slide(img, fake_forward(), (32, 40), 0.3))


def test_slide_on_an_image_smaller_than_the_window_pads_it():
    img = photo(20, 30)
    geometry = Geometry(protocol="original", image_size=32, crop_size=(32, 40))
    got = segment([img], fake_forward(), geometry, InferenceConfig(mode="slide"))[0]
    assert np.array_equal(got, direct_slide(img, fake_forward(), (32, 40), 0.25))


def test_tta_flip_and_scales_average_the_softmax_of_every_view(monkeypatch):
    img = photo(75, 101, seed=1)
    geometry = Geometry(protocol="original", image_size=32, base_size=64)
    config = InferenceConfig(flip=True, scales=(0.5, 1.0, 1.25))
    total = 0
    for scale, flip in config.views:
        vh, vw = geometry.view_size(75, 101, scale)
        padded = np.zeros((1, 3, math.ceil(vh / 32) * 32, math.ceil(vw / 32) * 32), np.float32)
        padded[0, :, :vh, :vw] = view_image(img, (vh, vw), "bilinear", flip).transpose(2, 0, 1) / 255.0
        up = resize_bilinear(fake_forward()(padded)[0][:, :vh, :vw], (75, 101))
        total = total + softmax(up[:, :, ::-1] if flip else up)
    for chunk in (inference.CHUNK_FLOATS, 64):
        monkeypatch.setattr(inference, "CHUNK_FLOATS", chunk)
        assert np.array_equal(segment([img], fake_forward(), geometry, config)[0], total.argmax(0))


def test_resize_back_matches_torch_and_works_in_row_chunks(monkeypatch):
    logits = np.random.default_rng(0).standard_normal((3, 7, 5)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(logits)[None], size=(61, 43), mode="bilinear", align_corners=False)[0]
    assert np.allclose(resize_bilinear(logits, (61, 43)), ref.numpy(), atol=1e-5)
    monkeypatch.setattr(inference, "CHUNK_FLOATS", 3 * 43 * 2)  # two rows per chunk
    assert np.array_equal(upsampled_argmax(logits, (61, 43)), ref.argmax(0).numpy())


def test_chunks_bound_the_resized_logits(monkeypatch):
    """Peak memory does not grow with C x H x W: no chunk of resized scores holds more than CHUNK_FLOATS floats."""
    monkeypatch.setattr(inference, "CHUNK_FLOATS", 4 * 300 * 10)
    seen = []
    original = inference._resize_axis

    def spy(x, n_out, axis, *a, **k):
        out = original(x, n_out, axis, *a, **k)
        seen.append(out.size)
        return out
    monkeypatch.setattr(inference, "_resize_axis", spy)
    geometry = Geometry(protocol="original", image_size=32, base_size=32)
    mask = segment([photo(400, 300)], fake_forward(), geometry)[0]
    assert mask.shape == (400, 300)
    assert max(seen) <= 4 * 300 * 10


def test_views_keep_the_aspect_and_the_article_squashes():
    assert Geometry(protocol="original", base_size=256).view_size(6000, 8000) == (192, 256)
    assert Geometry(protocol="original", max_side=1000).view_size(6000, 8000) == (750, 1000)
    assert Geometry(protocol="original").view_size(60, 80) == (60, 80)
    assert Geometry(protocol="article", image_size=128).view_size(6000, 8000) == (128, 128)
    assert Geometry(protocol="original", image_size=64, fixed=True).window == (64, 64)


def test_window_starts_cover_the_length_and_weights_peak_in_the_middle():
    assert window_starts(100, 32, 24) == [0, 24, 48, 68]
    assert window_starts(20, 32, 24) == [0]
    w = gaussian_weight((9, 9))
    assert w[4, 4] == 1.0 and w.min() > 0 and w[0, 0] < w[4, 4]


@pytest.mark.parametrize("kwargs, words", [
    (dict(overlap=1.0), "--overlap 1.0: must be in [0, 1)"),
    (dict(overlap=-0.1), "--overlap -0.1"),
    (dict(mode="tiles"), "--mode 'tiles': choose one of whole, slide"),
    (dict(scales=(0.0,)), "each must be in (0, 8]"),
])
def test_bad_inference_options_name_the_option(kwargs, words):
    with pytest.raises(Exception, match=None) as e:
        InferenceConfig(**kwargs)
    assert words in str(e.value)


def test_parse_tta():
    assert parse_tta(None) == (False, (1.0,))
    assert parse_tta("flip") == (True, (1.0,))
    assert parse_tta("flip,scales=0.75,1.0,1.25") == (True, (0.75, 1.0, 1.25))
    assert parse_tta("scales=0.5,1") == (False, (0.5, 1.0))
    with pytest.raises(Exception, match="unknown part 'rotate'"):
        parse_tta("rotate")
    with pytest.raises(Exception, match="scales must be numbers"):
        parse_tta("scales=a,b")


# ---- the cache at the images' own size, and crops

def folder(root: Path, sizes=SIZES, split: str | None = None) -> Path:
    """A folder dataset of photos of several sizes and aspects with 3-class masks (0, 1, 2; some 255)."""
    for sub, n in (("train", len(sizes)), ("val", 3)):
        (root / sub / "images").mkdir(parents=True, exist_ok=True)
        (root / sub / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = sizes[(i + (0 if sub == "train" else 2)) % len(sizes)]
            img = photo(h, w, seed=i + (100 if sub == "val" else 0))
            m = np.zeros((h, w), np.uint8)
            m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
            m[: h // 6] = 2
            m[-2:, -3:] = 255
            img[m == 1] //= 3  # something to learn
            Image.fromarray(img).save(root / sub / "images" / f"{sub}{i}.png")
            Image.fromarray(m).save(root / sub / "masks" / f"{sub}{i}.png")
    return root


def test_the_cache_keeps_every_size_and_a_cap_builds_a_new_cache(tmp_path):
    root = folder(tmp_path / "data")
    store = build_dataset("folder", "train", root=root, image_size=None, interpolation="bilinear", quiet=True)
    assert [store.size(i) for i in range(len(store))] == SIZES
    assert store.image(3).shape == (3, 33, 71) and store.mask(3).shape == (33, 71)
    assert np.array_equal(store.image(0).transpose(1, 2, 0),
                          np.asarray(Image.open(root / "train" / "images" / "train0.png").convert("RGB")))
    capped = build_dataset("folder", "train", root=root, image_size=None, max_side=36, quiet=True)
    assert [max(capped.size(i)) for i in range(len(capped))] == [36] * len(SIZES)
    assert capped.size(3) == (17, 36)  # aspect kept
    cache = tmp_path / "seglab-data" / "cache"
    assert len([p for p in cache.iterdir() if "original" in p.name]) == 2


def test_crops_rescale_pad_with_ignore_and_repeat_by_seed(tmp_path):
    store = build_dataset("folder", "train", root=folder(tmp_path / "data"), image_size=None, quiet=True)
    config = CropConfig(crop_size=(48, 48), scale_range=(0.5, 0.5))  # every image smaller than the crop
    x, y = crop_batch(store, [0, 3], config, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 48, 48) and y.shape == (2, 48, 48) and x.dtype == torch.float32
    h, w = rescaled_size(40, 64, None, 0.5)
    assert (h, w) == (20, 32)
    assert (y[0, h:] == 255).all() and (y[0, :, w:] == 255).all() and (y[0, :h, :w] != 255).any()
    assert (x[0, :, h:] == 0).all()
    again = crop_batch(store, [0, 3], config, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    base = CropConfig(crop_size=(32, 32), base_size=128, scale_range=(1.0, 1.0))
    _, big = crop_batch(store, [2], base, torch.Generator().manual_seed(1))
    assert (big != 255).all()  # 50x50 rescaled to 128x128 covers a 32x32 crop


def test_cat_max_ratio_redraws_crops_dominated_by_one_class(tmp_path):
    store = build_dataset("folder", "train", root=folder(tmp_path / "data"), image_size=None, quiet=True)

    def worst(ratio: float) -> float:
        config = CropConfig(crop_size=(12, 12), scale_range=(1.0, 1.0), cat_max_ratio=ratio)
        shares = []
        gen = torch.Generator().manual_seed(0)
        for _ in range(40):
            _, y = crop_batch(store, [0], config, gen)
            counts = torch.bincount(y[y != 255].long(), minlength=3).float()
            shares.append((counts.max() / counts.sum()).item())
        return float(np.mean(shares))
    assert worst(0.75) < worst(1.0)


def test_new_augmentations_flip_and_turn_masks_with_images():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) / 400
    y = torch.arange(2 * 8 * 8).reshape(2, 8, 8) % 3
    g = torch.Generator().manual_seed(0)
    ax, ay = augment_batch(x, y, AugmentConfig(hflip=0, contrast=0, vflip=1.0), g)
    assert torch.equal(ax, x.flip(-2)) and torch.equal(ay, y.flip(-2))
    ax, ay = augment_batch(x, y, AugmentConfig(hflip=0, contrast=0, rot90=1.0), torch.Generator().manual_seed(0))
    for b in range(2):
        k = next(k for k in (1, 2, 3) if torch.equal(ay[b], y[b].rot90(k, (-2, -1))))
        assert torch.equal(ax[b], x[b].rot90(k, (-2, -1)))
    mid = 0.4 + x / 5  # colours away from 0 and 1: no clamping
    hx, _ = augment_batch(mid, y, AugmentConfig(hflip=0, contrast=0, hue=0.5), torch.Generator().manual_seed(0))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert not torch.allclose(hx, mid, atol=1e-3)
    assert torch.allclose((hx * luma).sum(1), (mid * luma).sum(1), atol=1e-4)  # a hue turn keeps the luma
    bx, _ = augment_batch(x, y, AugmentConfig(hflip=0, contrast=0, blur=1.0), torch.Generator().manual_seed(0))
    assert bx.std() < x.std()


def test_the_article_draws_are_unchanged_by_the_new_options():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 3, (4, 8, 8))
    a = augment_batch(x, y, AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment_batch(x, y, AugmentConfig(hue=0.0, vflip=0.0, rot90=0.0, blur=0.0), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---- training and scoring at the masks' own size

TINY_ORIGINAL = ["--model", "vit", "-O", "patch_size=8", "-O", "embed_size=16", "-O", "num_blocks=1", "-O",
                 "num_heads=2", "--protocol", "original", "--crop-size", "32", "40", "--scale-range", "0.5,2.0",
                 "--epochs", "2", "--batch-size", "3", "--num-vis", "2", "--quiet", "--lr", "0.003"]


def confusion_total(path: Path) -> int:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return sum(int(v) for row in rows[1:] for v in row[1:])


def labelled_pixels(root: Path, split: str) -> int:
    return sum(int((np.asarray(Image.open(p)) != 255).sum()) for p in (root / split / "masks").glob("*.png"))


def test_a_folder_of_many_sizes_trains_on_crops_and_scores_at_the_masks_size(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = folder(tmp_path / "data")
    assert cli.main(["train", "--dataset", "folder", "--data-root", str(root), *TINY_ORIGINAL, "--out-dir", "runs",
                     "--run-name", "r", "--hue", "0.05", "--vflip", "0.5", "--blur", "0.2"]) == 0
    run = Path("runs/r")
    assert confusion_total(run / "confusion.csv") == labelled_pixels(root, "val")
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["protocol"] for r in rows] == ["original-whole", "original-whole"]
    assert "original protocol: 32x40 crops" in (run / "train.log").read_text()
    assert (run / "figures" / "epoch_002.png").is_file()
    # seglab eval, both protocols
    assert cli.main(["eval", str(run), "--quiet", "--out", "e1"]) == 0
    assert confusion_total(Path("e1/confusion.csv")) == labelled_pixels(root, "val")
    assert cli.main(["eval", str(run), "--quiet", "--out", "e2", "--mode", "slide", "--tta", "flip"]) == 0
    assert confusion_total(Path("e2/confusion.csv")) == labelled_pixels(root, "val")
    assert cli.main(["eval", str(run), "--quiet", "--out", "e3", "--protocol", "article"]) == 0
    assert confusion_total(Path("e3/confusion.csv")) <= 3 * 128 * 128


def test_resume_with_crops_and_new_augmentations_equals_an_uninterrupted_run(tmp_path):
    root = folder(tmp_path / "data")
    base = dict(model="vit", model_options=dict(patch_size=8, embed_size=16, num_blocks=1, num_heads=2),
                dataset="folder", data_root=str(root), protocol="original", crop_size=[32], scale_range=[0.5, 1.5],
                cat_max_ratio=0.9, hue=0.05, vflip=0.5, rot90=0.5, blur=0.3, batch_size=3, num_vis=0, quiet=True,
                out_dir=str(tmp_path / "runs"), scheduler="step", step_size=1, gamma=0.5)
    full = train(TrainConfig.from_dict({**base, "epochs": 3, "run_name": "full"}))
    part = train(TrainConfig.from_dict({**base, "epochs": 2, "run_name": "part"}))
    resumed = train(TrainConfig.from_dict({**base, "epochs": 3}), resume=part.run_dir)
    key = ["epoch", "train_loss", "val_loss", "pixel_accuracy", "miou", "lr", "protocol"]

    def rows(run: Path) -> list[dict]:
        with open(run / "metrics.csv", newline="") as f:
            return [{k: r[k] for k in key} for r in csv.DictReader(f)]
    assert rows(resumed.run_dir) == rows(full.run_dir)


@pytest.mark.parametrize("args, words", [
    (["--crop-size", "500"], "--crop-size 500 500 is larger than every training image"),
    (["--scale-range", "2.0,0.5"], "scale_range = [2.0, 0.5]: out of order"),
    (["--overlap", "1.0"], "overlap = 1.0: must be in [0, 1)"),
    (["--crop-size", "32", "40", "--rot90", "0.5"], "rot90 = 0.5: needs a square crop"),
])
def test_bad_protocol_options_stop_with_one_message(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    root = folder(tmp_path / "data")
    base = [a for a in TINY_ORIGINAL]
    i = base.index("--crop-size")
    del base[i:i + 3]
    message = cli_error(capsys, ["train", "--dataset", "folder", "--data-root", str(root), *base, *args,
                                 "--out-dir", "runs"])
    assert words in message
    assert not list(Path("runs").glob("*/checkpoints/*.safetensors"))


def test_article_protocol_refuses_original_options(capsys):
    assert "applies to the original protocol" in cli_error(capsys, ["train", "--crop-size", "64", "--model", "segnet"])


# ---- prediction: PyTorch and ONNX Runtime share the same whole / slide / TTA code

@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("segnet-dsc", num_classes=C, image_size=32, **{})
    geometry = Geometry(protocol="original", image_size=32, crop_size=(32, 32), base_size=None, max_side=None)
    path = tmp_path_factory.mktemp("orig") / "orig.safetensors"
    save_checkpoint(path, model.eval(), {"model": model.seglab_spec, "epoch": 1, "image_size": 32,
                                         "interpolation": "bilinear", "class_names": [f"c{i}" for i in range(C)],
                                         "geometry": geometry.to_dict()})
    return path


def test_predict_slide_and_tta_on_torch_and_onnx_agree(original_checkpoint, tmp_path):
    from seglab.export import export_onnx

    onnx_path = tmp_path / "orig.onnx"
    export_onnx(original_checkpoint, onnx_path)
    (tmp_path / "in").mkdir()
    Image.fromarray(photo(70, 90)).save(tmp_path / "in" / "a.png")
    for kw in (dict(mode="whole"), dict(mode="slide", overlap=0.5), dict(mode="slide", tta="flip,scales=0.75,1.0")):
        by_torch = predict(original_checkpoint, [tmp_path / "in"], device="cpu", quiet=True, **kw)[0].mask
        by_onnx = predict(onnx_path, [tmp_path / "in"], out_dir=tmp_path / "out", quiet=True, **kw)[0].mask
        assert by_torch.shape == by_onnx.shape == (70, 90)
        assert (by_torch == by_onnx).mean() > 0.999, kw
    written = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
    assert written.shape == (70, 90)


def test_old_checkpoints_predict_as_article_squares(tiny_vit_checkpoint, tmp_path):
    """A checkpoint without a geometry squashes to its square, as before: the same masks as the direct path."""
    from seglab.checkpoint import load_model

    (tmp_path / "in").mkdir()
    img = Image.fromarray(photo(50, 70))
    img.save(tmp_path / "in" / "a.png")
    got = predict(tiny_vit_checkpoint, [tmp_path / "in"], device="cpu", quiet=True)[0].mask
    model, _ = load_model(tiny_vit_checkpoint, "cpu")
    x = torch.from_numpy(np.array(img.resize((32, 32), Image.Resampling.BILINEAR))).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        ref = F.interpolate(model.eval()(x.float()), size=(50, 70), mode="bilinear", align_corners=False)
    assert (got == ref[0].argmax(0).numpy()).mean() > 0.999


def test_predict_cli_rejects_a_bad_overlap(tiny_vit_checkpoint, tmp_path, capsys):
    Image.fromarray(photo(20, 20)).save(tmp_path / "a.png")
    message = cli_error(capsys, ["predict", str(tiny_vit_checkpoint), str(tmp_path / "a.png"), "--out",
                                 str(tmp_path / "o"), "--mode", "slide", "--overlap", "1.5"])
    assert "--overlap 1.5: must be in [0, 1)" in message
    assert "--tta 'rot'" in cli_error(capsys, ["predict", str(tiny_vit_checkpoint), str(tmp_path / "a.png"), "--out",
                                               str(tmp_path / "o"), "--tta", "rot"])


def test_geometry_round_trips_through_a_dict():
    g = Geometry(protocol="original", image_size=64, crop_size=(48, 64), base_size=256, max_side=1024,
                 interpolation="bilinear")
    assert Geometry.from_dict(g.to_dict()) == g
    assert Geometry.from_dict({"image_size": 128}) == dataclasses.replace(Geometry(), interpolation="nearest")


def test_protocol_article_drops_a_recipes_crops():
    from seglab.config import apply_recipe

    model = "fpn-efficientnet-lite0"
    values = apply_recipe({"protocol": "article", "model": model, "crop_size": None}, "segformer")
    assert values["protocol"] == "article"
    assert TrainConfig.from_dict(values).geometry().protocol == "article"
    cfg = TrainConfig.from_dict(apply_recipe({"model": model, "protocol": "article", "image_size": 128}, "finetune"))
    assert cfg.geometry().protocol == "article" and cfg.crop() == (128, 128)
    assert TrainConfig.from_dict(apply_recipe({"model": model}, "finetune")).crop() == (256, 256)
    assert TrainConfig.from_dict(apply_recipe({"model": model, "image_size": 64}, "finetune")).crop() == (64, 64)


def test_the_server_runs_every_upload_as_configured(original_checkpoint):
    import io

    from fastapi.testclient import TestClient

    from seglab.serve.app import create_app

    app = create_app(original_checkpoint, inference=InferenceConfig(mode="slide", flip=True))
    with TestClient(app) as client:
        assert client.get("/model").json()["inference"] == "slide (overlap 0.25), tta flip"
        buf = io.BytesIO()
        Image.fromarray(photo(50, 70)).save(buf, format="PNG")
        r = client.post("/predict", files={"file": ("a.png", buf.getvalue(), "image/png")})
        assert r.status_code == 200, r.text


def test_slide_says_how_many_images_fit_in_one_window(original_checkpoint, tmp_path, capsys):
    Image.fromarray(photo(20, 24)).save(tmp_path / "small.png")
    Image.fromarray(photo(70, 90)).save(tmp_path / "large.png")
    assert cli.main(["predict", str(original_checkpoint), str(tmp_path / "small.png"), str(tmp_path / "large.png"),
                     "--out", str(tmp_path / "o"), "--mode", "slide", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "note: 1 image(s) fit in one 32x32 window at the training scale: padded to it and run once" in out
    assert np.asarray(Image.open(tmp_path / "o" / "small_mask.png")).shape == (20, 24)
