"""Data: safe image/mask reading, batched augmentation, the synthetic source, the uint8 cache and user folders.

Every dataset build writes to a tmp_path cache_dir (and conftest points SEGLAB_DATA at a temporary folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import build_dataset
from seglab.data.augment import AugmentConfig, augment_batch
from seglab.data.cache import resize_pair
from seglab.data.io import read_image, read_mask
from seglab.data.synthetic import SyntheticSource
from seglab.errors import SeglabError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def rgb_array(h: int, w: int, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# io.read_image


def test_read_image_rgba_composites_on_black(tmp_path: Path) -> None:
    arr = np.zeros((6, 9, 4), dtype=np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[..., 3] = 255
    arr[0, 0, 3] = 0  # fully transparent pixel
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, mode="RGBA").save(path)
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (9, 6)
    out = np.asarray(img)
    assert tuple(out[1, 1]) == (200, 100, 50)
    assert tuple(out[0, 0]) == (0, 0, 0)


@pytest.mark.parametrize("transparency", [False, True])
def test_read_image_palette(tmp_path: Path, transparency: bool) -> None:
    img = Image.new("P", (7, 5), 0)
    palette = [0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6)
    img.putpalette(palette)
    img.putpixel((2, 3), 1)
    path = tmp_path / "p.png"
    if transparency:
        img.save(path, transparency=0)  # index 0 transparent
    else:
        img.save(path)
    out = read_image(path)
    assert out.mode == "RGB" and out.size == (7, 5)
    assert np.asarray(out)[3, 2].tolist() == [10, 20, 30]


def test_read_image_grayscale(tmp_path: Path) -> None:
    arr = rng().integers(0, 256, size=(5, 8), dtype=np.uint8)
    path = tmp_path / "l.png"
    Image.fromarray(arr, mode="L").save(path)
    out = np.asarray(read_image(path))
    assert out.shape == (5, 8, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], arr)


def test_read_image_16_bit(tmp_path: Path) -> None:
    arr = np.array([[0, 32768, 65535], [256, 1000, 65535]], dtype=np.uint16)
    path = tmp_path / "i16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (3, 2)
    out = np.asarray(img)[..., 0]
    assert out[0].tolist() == [0, 128, 255]  # scaled by the 16-bit range, not clipped


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_read_image_cmyk(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cmyk.{fmt.lower()}"
    Image.fromarray(rgb_array(12, 10)).convert("CMYK").save(path, fmt)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (10, 12)


def test_read_image_exif_orientation(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.size == (20, 40)  # width and height swapped
    out = np.asarray(img).mean(axis=(1, 2))
    # After a 90 degree clockwise turn the white left half is on top.
    assert out[:15].mean() > 200 and out[25:].mean() < 50


def test_read_image_truncated_jpeg(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(rgb_array(64, 64)).save(good, quality=95)
    data = good.read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SeglabError, match="truncated.jpg"):
        read_image(bad)


def test_read_image_empty_and_not_an_image(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(SeglabError, match="empty.jpg") as e:
        read_image(empty)
    assert "0 bytes" in str(e.value)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n" * 10)
    with pytest.raises(SeglabError, match="notes.jpg"):
        read_image(text)
    with pytest.raises(SeglabError, match="missing.png"):
        read_image(tmp_path / "missing.png")


# ---------------------------------------------------------------------------------------------------------------
# io.read_mask


def save_mask(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def test_read_mask_trimap_value_map(tmp_path: Path) -> None:
    arr = rng().integers(1, 4, size=(6, 7), dtype=np.uint8)
    path = save_mask(tmp_path / "trimap.png", arr)
    out = read_mask(path, 3, value_map={1: 0, 2: 1, 3: 2})
    assert out.dtype == np.uint8
    assert np.array_equal(out, arr - 1)


def test_read_mask_value_map_rejects_unmapped(tmp_path: Path) -> None:
    arr = np.array([[1, 2, 3, 4], [0, 1, 2, 3]], dtype=np.uint8)
    path = save_mask(tmp_path / "bad_trimap.png", arr)
    with pytest.raises(SeglabError, match="bad_trimap.png") as e:
        read_mask(path, 3, value_map={1: 0, 2: 1, 3: 2})
    assert "0, 4" in str(e.value)


def test_read_mask_values_outside_classes_listed(tmp_path: Path) -> None:
    arr = np.array([[0, 1, 2, 255], [7, 5, 5, 1]], dtype=np.uint8)
    path = save_mask(tmp_path / "m.png", arr)
    with pytest.raises(SeglabError, match="m.png") as e:
        read_mask(path, 3)
    assert "5, 7" in str(e.value)
    # 255 is ignore, not an error; with enough classes the mask passes unchanged.
    assert np.array_equal(read_mask(path, 8), arr)


def test_read_mask_rgb(tmp_path: Path) -> None:
    colour = save_mask(tmp_path / "colour.png", rgb_array(4, 4))
    with pytest.raises(SeglabError, match="colour"):
        read_mask(colour, 3)
    gray = np.repeat(rng().integers(0, 3, size=(4, 5, 1), dtype=np.uint8), 3, axis=2)  # R == G == B
    path = save_mask(tmp_path / "gray_rgb.png", gray)
    assert np.array_equal(read_mask(path, 3), gray[..., 0])


def test_read_mask_16_bit(tmp_path: Path) -> None:
    arr = np.array([[0, 1, 2], [2, 1, 255]], dtype=np.uint16)
    path = save_mask(tmp_path / "m16.png", arr)
    out = read_mask(path, 3)
    assert out.dtype == np.uint8 and np.array_equal(out, arr.astype(np.uint8))
    bad = save_mask(tmp_path / "m16bad.png", np.array([[0, 300]], dtype=np.uint16))
    with pytest.raises(SeglabError, match="300"):
        read_mask(bad, 3)


def test_read_mask_palette_indices_are_classes(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    img.save(tmp_path / "pal.png")
    assert read_mask(tmp_path / "pal.png", 3).tolist() == [[0, 1], [2, 1]]


# ---------------------------------------------------------------------------------------------------------------
# augment


def batch(seed: int = 0, B: int = 6, H: int = 8, W: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    masks = torch.randint(0, 3, (B, H, W), generator=g, dtype=torch.uint8)
    masks[:, 0, 0] = 255
    return images, masks


def test_augment_identity() -> None:
    images, masks = batch()
    x, y = augment_batch(images, masks, AugmentConfig(hflip=0.0, contrast=0.0), torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, images.float() / 255)
    assert torch.equal(y, masks.long())


def test_augment_flip_always() -> None:
    images, masks = batch()
    x, y = augment_batch(images, masks, AugmentConfig(hflip=1.0, contrast=0.0))
    assert torch.equal(x, images.flip(-1).float() / 255)
    assert torch.equal(y, masks.long().flip(-1))


def test_augment_flip_keeps_masks_aligned() -> None:
    # The mask is a function of the image's pixels, so a flip of one without the other would break it.
    images, _ = batch(1, B=32)
    masks = (images[:, 0] > 127).to(torch.uint8)
    x, y = augment_batch(images, masks, AugmentConfig(hflip=0.5, contrast=0.0), torch.Generator().manual_seed(1))
    flipped = torch.tensor([not torch.equal(x[i], images[i].float() / 255) for i in range(32)])
    assert 0 < flipped.sum() < 32  # some flipped, some not
    assert torch.equal(y, (x[:, 0] > 127.5 / 255).long())


def test_augment_contrast_matches_colorjitter_formula() -> None:
    images, masks = batch(2)
    B = images.shape[0]
    x, y = augment_batch(images, masks, AugmentConfig(hflip=0.0, contrast=0.3), torch.Generator().manual_seed(5))
    # Recompute with the same generator: factor f ~ U[0.7, 1.3] per image, torchvision's adjust_contrast.
    g = torch.Generator().manual_seed(5)
    f = 0.7 + torch.rand(B, 1, 1, 1, generator=g) * 0.6
    assert ((f >= 0.7) & (f <= 1.3)).all()
    img = images.float() / 255
    gray = 0.2989 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    mean = gray.mean(dim=(-2, -1)).view(B, 1, 1, 1)
    expected = (f * img + (1 - f) * mean).clamp(0, 1)
    assert torch.allclose(x, expected, atol=1e-6)
    assert not torch.allclose(x, img)  # contrast really changed the image
    assert torch.equal(y, masks.long())  # and not the mask


def test_augment_deterministic_by_generator() -> None:
    images, masks = batch(3)
    cfg = AugmentConfig(hflip=0.5, contrast=0.3, brightness=0.2, saturation=0.2)
    a = augment_batch(images, masks, cfg, torch.Generator().manual_seed(11))
    b = augment_batch(images, masks, cfg, torch.Generator().manual_seed(11))
    c = augment_batch(images, masks, cfg, torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.float32 and a[1].dtype == torch.int64
    assert a[0].min() >= 0 and a[0].max() <= 1
    assert set(a[1].unique().tolist()) <= {0, 1, 2, 255}


# ---------------------------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_seeded() -> None:
    a, b = SyntheticSource("train", count=4, size=32, seed=3), SyntheticSource("train", count=4, size=32, seed=3)
    val = SyntheticSource("val", count=4, size=32, seed=3)
    other = SyntheticSource("train", count=4, size=32, seed=4)
    for i in range(4):
        (ia, ma), (ib, mb) = a.load(i), b.load(i)
        assert np.array_equal(np.asarray(ia), np.asarray(ib)) and np.array_equal(ma, mb)
        assert not np.array_equal(np.asarray(ia), np.asarray(val.load(i)[0]))
        assert not np.array_equal(np.asarray(ia), np.asarray(other.load(i)[0]))
        assert ia.mode == "RGB" and ia.size == (32, 32) and ma.shape == (32, 32)
        assert set(np.unique(ma).tolist()) == {0, 1, 2}
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()


def test_synthetic_build_dataset(tmp_path: Path) -> None:
    ds = build_dataset("synthetic", "train", image_size=32, count=8, cache_dir=tmp_path / "cache", quiet=True)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (8, 3, 32, 32)
    assert ds.masks.dtype == torch.uint8 and ds.masks.shape == (8, 32, 32)
    assert set(ds.masks.unique().tolist()) <= {0, 1, 2}
    assert ds.class_names == ("pet", "background", "border")
    # At the generator's own size the cache holds the samples unchanged.
    src = SyntheticSource("train", count=8, size=32, seed=0)
    for i in (0, 7):
        img, mask = src.load(i)
        assert np.array_equal(ds.images[i].numpy().transpose(1, 2, 0), np.asarray(img))
        assert np.array_equal(ds.masks[i].numpy(), mask)
    x, y = ds[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.max() <= 1


def test_synthetic_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(SeglabError, match="colour"):
        build_dataset("synthetic", "train", image_size=32, count=2, colour=True, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------------------
# cache


def test_second_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = build_dataset("synthetic", "val", image_size=24, count=4, cache_dir=cache, quiet=True)

    def fail(self, i):
        raise AssertionError("the source was decoded again instead of reading the cache")

    monkeypatch.setattr(SyntheticSource, "load", fail)
    second = build_dataset("synthetic", "val", image_size=24, count=4, cache_dir=cache, quiet=True)
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    assert second.ids == first.ids
    # A different size is a different cache: it must decode, so it reaches the failing load.
    with pytest.raises(AssertionError, match="decoded again"):
        build_dataset("synthetic", "val", image_size=16, count=4, cache_dir=cache, quiet=True)


def make_folder(root: Path, n: int = 3, size: tuple[int, int] = (12, 16), classes: list[str] | None = None,
                seed: int = 0) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        Image.fromarray(rgb_array(h, w, seed + i)).save(root / "images" / f"img{i:02d}.png")
        m = rng(seed + 100 + i).integers(0, 3, size=(h, w), dtype=np.uint8)
        Image.fromarray(m).save(root / "masks" / f"img{i:02d}.png")
    if classes is not None:
        (root / "classes.json").write_text(json.dumps(classes))
    return root


def test_changed_source_rebuilds(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    a = build_dataset("folder", "all", root=root, image_size=(12, 16), cache_dir=cache, quiet=True)
    mask_path = root / "masks" / "img01.png"
    new = np.full((12, 16), 2, dtype=np.uint8)
    Image.fromarray(new).save(mask_path)
    st = mask_path.stat()
    os.utime(mask_path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    b = build_dataset("folder", "all", root=root, image_size=(12, 16), cache_dir=cache, quiet=True)
    assert torch.equal(b.masks[1], torch.from_numpy(new))
    assert not torch.equal(a.masks[1], b.masks[1])
    assert torch.equal(a.masks[0], b.masks[0]) and torch.equal(a.images, b.images)
    assert len([p for p in cache.iterdir() if (p / "meta.json").exists()]) == 2


def test_interpolation_images_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_folder(root, n=2, size=(30, 40), classes=["a", "b", "c"])
    sparse = np.zeros((30, 40), dtype=np.uint8)
    sparse[::3, ::2] = 2  # values {0, 2}: a bilinear resize would invent 1s
    Image.fromarray(sparse).save(root / "masks" / "img00.png")
    cache = tmp_path / "cache"
    near = build_dataset("folder", "all", root=root, image_size=(13, 17), cache_dir=cache, quiet=True)
    bil = build_dataset("folder", "all", root=root, image_size=(13, 17), interpolation="bilinear",
                        cache_dir=cache, quiet=True)
    assert set(bil.masks[0].unique().tolist()) <= {0, 2}
    assert torch.equal(bil.masks, near.masks)  # masks are always nearest
    assert not torch.equal(bil.images, near.images)
    src = Image.open(root / "images" / "img00.png").convert("RGB")
    for ds, mode in ((near, Image.Resampling.NEAREST), (bil, Image.Resampling.BILINEAR)):
        ref = np.asarray(src.resize((17, 13), mode)).transpose(2, 0, 1)
        assert np.array_equal(ds.images[0].numpy(), ref)
    with pytest.raises(SeglabError, match="interpolation"):
        resize_pair(src, sparse, (8, 8), "cubic-ish")


# ---------------------------------------------------------------------------------------------------------------
# folders


def test_folder_dataset(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", n=3, classes=["background", "cat", "dog"])
    Image.fromarray(rgb_array(12, 16, 9)).save(root / "images" / "photo.jpg")
    Image.fromarray(np.ones((12, 16), dtype=np.uint8)).save(root / "masks" / "photo.png")
    ds = build_dataset("folder", "all", root=root, image_size=8, cache_dir=tmp_path / "cache", quiet=True)
    assert ds.class_names == ("background", "cat", "dog")
    assert len(ds) == 4 and ds.images.shape == (4, 3, 8, 8) and ds.masks.shape == (4, 8, 8)
    assert [Path(i).name for i in ds.ids] == ["img00.png", "img01.png", "img02.png", "photo.jpg"]
    assert (ds.masks[3] == 1).all()
    assert ds.skipped == []


def test_folder_infers_classes_without_json(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", n=2)
    ds = build_dataset("folder", "all", root=root, image_size=8, cache_dir=tmp_path / "cache", quiet=True)
    assert ds.class_names == ("class0", "class1", "class2")


def test_folder_missing_mask(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", n=3, classes=["a", "b", "c"])
    Image.fromarray(rgb_array(12, 16, 5)).save(root / "images" / "lonely.png")
    cache = tmp_path / "cache"
    with pytest.raises(SeglabError, match="lonely.png"):
        build_dataset("folder", "all", root=root, image_size=8, cache_dir=cache, quiet=True)
    assert not list(cache.glob("*/meta.json"))  # nothing half-built was left behind
    ds = build_dataset("folder", "all", root=root, image_size=8, cache_dir=cache, skip_bad=True, quiet=True)
    assert len(ds) == 3
    assert [Path(s[0]).name for s in ds.skipped] == ["lonely.png"]
    assert "no mask" in ds.skipped[0][1]
    # Without skip_bad again, the cache built with skips is not trusted: the error comes back.
    with pytest.raises(SeglabError, match="lonely.png"):
        build_dataset("folder", "all", root=root, image_size=8, cache_dir=cache, quiet=True)


def test_folder_bad_mask_values_and_sizes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", n=2, classes=["a", "b", "c"])
    Image.fromarray(np.full((12, 16), 5, dtype=np.uint8)).save(root / "masks" / "img00.png")
    with pytest.raises(SeglabError, match="img00.png"):
        build_dataset("folder", "all", root=root, image_size=8, cache_dir=tmp_path / "c1", quiet=True)
    Image.fromarray(np.zeros((10, 16), dtype=np.uint8)).save(root / "masks" / "img00.png")
    with pytest.raises(SeglabError, match="differs"):
        build_dataset("folder", "all", root=root, image_size=8, cache_dir=tmp_path / "c2", quiet=True)


def test_folder_empty_or_missing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    with pytest.raises(SeglabError, match="no images"):
        build_dataset("folder", "all", root=root, cache_dir=tmp_path / "cache")
    with pytest.raises(SeglabError, match="root"):
        build_dataset("folder", "all", cache_dir=tmp_path / "cache")
    with pytest.raises(SeglabError, match="does not exist"):
        build_dataset("folder", "all", root=tmp_path / "nowhere", cache_dir=tmp_path / "cache")


def test_folder_train_val_partition_all(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", n=20, size=(4, 4), classes=["a", "b", "c"])
    cache = tmp_path / "cache"
    kw = {"root": root, "image_size": 4, "cache_dir": cache, "quiet": True}
    all_ids = build_dataset("folder", "all", **kw).ids
    train = build_dataset("folder", "train", **kw).ids
    val = build_dataset("folder", "val", **kw).ids
    assert train and val
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(all_ids)
    assert len(all_ids) == 20


def test_folder_duplicate_stems(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", n=2, classes=["a", "b", "c"])
    Image.fromarray(rgb_array(12, 16, 7)).save(root / "images" / "img01.jpg")  # img01.png exists too
    with pytest.raises(SeglabError, match="img01"):
        build_dataset("folder", "all", root=root, image_size=8, cache_dir=tmp_path / "cache", quiet=True)
