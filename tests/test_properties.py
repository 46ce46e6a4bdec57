"""Property tests (hypothesis): whatever bytes, masks or config values arrive, the only outcomes are a correct
result or a SeglabError that names the file or field. Never a raw exception, never a wrong result.

Each test runs about 50 examples with no deadline; the whole file takes a few seconds.
"""

from __future__ import annotations

import io
import itertools
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from seglab.config import AMP_MODES, DEVICES, OPTIMIZERS, SCHEDULERS, TrainConfig
from seglab.data.io import read_image, read_mask
from seglab.errors import SeglabError

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                    database=None)

_DIR = Path(tempfile.mkdtemp(prefix="seglab-properties-"))
_COUNTER = itertools.count()


def _file(data: bytes, suffix: str = ".jpg") -> Path:
    path = _DIR / f"f{next(_COUNTER)}{suffix}"
    path.write_bytes(data)
    return path


@pytest.fixture(autouse=True, scope="module")
def _smaller_bomb_limit():
    # Random headers can claim any size; a 4-megapixel limit keeps a claimed giant from being allocated slowly.
    with mock.patch.object(PIL.Image, "MAX_IMAGE_PIXELS", 4_000_000):
        yield


# ------------------------------------------------------------------------------------------------- images


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (13, 9)) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


VALID = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}
HEADERS = [data[:16] for data in VALID.values()] + [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00"]


def _check_image(path: Path) -> None:
    try:
        img = read_image(path)
    except SeglabError as e:
        assert str(path) in str(e)
        return
    assert img.mode == "RGB" and img.size[0] >= 1 and img.size[1] >= 1
    assert np.asarray(img).shape == (img.size[1], img.size[0], 3)


@SETTINGS
@given(st.one_of(st.binary(max_size=2048),
                 st.tuples(st.sampled_from(HEADERS), st.binary(max_size=1024)).map(lambda t: t[0] + t[1])))
def test_random_bytes_as_an_image(data):
    _check_image(_file(data))


@SETTINGS
@given(fmt=st.sampled_from(sorted(VALID)), cut=st.integers(0, 4096),
       flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), max_size=6))
def test_damaged_real_images(fmt, cut, flips):
    data = bytearray(VALID[fmt])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    _check_image(_file(bytes(data[: max(cut, 1)] if cut < len(data) else data)))


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


@SETTINGS
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(["PNG", "TIFF", "JPEG", "BMP", "GIF", "WEBP"]),
       w=st.integers(1, 20), h=st.integers(1, 20), orientation=st.sampled_from([None, 1, 3, 6, 8]))
def test_valid_images_of_any_mode_read_as_upright_rgb(mode, fmt, w, h, orientation):
    rng = np.random.default_rng(w * 100 + h)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    try:
        img.save(buf, format=fmt, **kwargs)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # Pillow cannot write this mode in this format: nothing to read
    out = read_image(_file(buf.getvalue()))
    assert out.mode == "RGB"
    with Image.open(io.BytesIO(buf.getvalue())) as stored:
        turned = stored.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    assert out.size == ((h, w) if turned else (w, h))


# -------------------------------------------------------------------------------------------------- masks


@SETTINGS
@given(arr=st.one_of(arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, 255)),
                     arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, 4)),
                     arrays(np.uint16, st.tuples(st.integers(1, 8), st.integers(1, 8)),
                            elements=st.integers(0, 65535))),
       num_classes=st.one_of(st.integers(1, 255), st.integers(-3, 300)),
       value_map=st.one_of(st.none(), st.dictionaries(st.integers(0, 300), st.integers(0, 254), max_size=5)),
       ignore=st.sampled_from([(), (255,), (0,), (255, 7)]))
def test_random_masks(arr, num_classes, value_map, ignore):
    path = _DIR / f"m{next(_COUNTER)}.png"
    Image.fromarray(arr).save(path)  # uint8 -> L, uint16 -> I;16
    values = arr.astype(np.int64)
    if value_map is None:
        expected = values.copy()
        ok = (values < num_classes) | np.isin(values, ignore)
        valid = 1 <= num_classes <= 255 and ok.all()
    else:
        expected = np.full(values.shape, -1, dtype=np.int64)
        for src, dst in value_map.items():
            expected[values == src] = dst
        for v in ignore:
            expected[values == v] = 255
        valid = bool((expected >= 0).all())
    try:
        got = read_mask(path, num_classes, value_map=value_map, ignore_values=ignore)
    except SeglabError as e:
        assert not valid, f"a valid mask was refused: {e}"
        assert str(path) in str(e) or "num_classes" in str(e)
        return
    assert valid, "an invalid mask was accepted"
    assert got.dtype == np.uint8 and got.shape == arr.shape
    assert np.array_equal(got, expected)


# ------------------------------------------------------------------------------------------------- configs

FIELDS = [f for f in TrainConfig.__dataclass_fields__]

_any = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 200), st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2),
)

_PLAUSIBLE = {
    "model": st.sampled_from(["vit", "vit-small", "segnet", "segformer-b0", "nope"]),
    "model_options": st.dictionaries(
        st.sampled_from(["embed_size", "num_heads", "patch_size", "num_blocks", "dropout", "bogus"]),
        st.one_of(st.integers(-2, 64), st.floats(-1, 2), st.text(max_size=3)), max_size=3),
    "dataset": st.sampled_from(["synthetic", "folder", "oxford-pets", "imagenet"]),
    "image_size": st.sampled_from([16, 32, 64, 100, 128, 0]),
    "optimizer": st.sampled_from([*OPTIMIZERS, "adamax"]),
    "scheduler": st.sampled_from([*SCHEDULERS, "linear"]),
    "amp": st.sampled_from([*AMP_MODES, "fp16"]),
    "device": st.sampled_from([*DEVICES, "cuda:1", "tpu"]),
    "interpolation": st.sampled_from(["nearest", "bilinear", "cubic"]),
    "lr": st.floats(-1, 1),
    "epochs": st.integers(-1, 5),
}


def _typed(key: str):
    """Values of the field's own type, mostly in range: they reach the range and model checks."""
    if key in _PLAUSIBLE:
        return _PLAUSIBLE[key]
    default = TrainConfig.__dataclass_fields__[key].default
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-2, 100)
    if isinstance(default, float):
        return st.floats(-0.5, 2.0)
    if isinstance(default, str):
        return st.sampled_from([default, "", "x"])
    return st.one_of(st.none(), st.text(max_size=4))  # the optional strings and ints (None by default)


def _value(key: str):
    if key not in TrainConfig.__dataclass_fields__:
        return _any
    return st.one_of(_typed(key), _typed(key), _typed(key), _any)  # three in four values of the right type


_configs = st.lists(st.sampled_from(FIELDS * 4 + ["nonsense"]), max_size=4, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: _value(k) for k in keys}))


@SETTINGS
@given(_configs)
def test_random_configs(values):
    try:
        cfg = TrainConfig.from_dict(values)
    except SeglabError as e:
        named = [k for k in values if str(k) in str(e)] + [k for k in ("model", "image_size") if k in str(e)]
        assert named or "model_options" in str(e), f"the error names no field: {e}"
        return
    assert "nonsense" not in values
    cfg.validate()  # a config that was accepted stays valid
    for key, value in values.items():
        assert getattr(cfg, key) == value or (isinstance(value, int) and getattr(cfg, key) == float(value))


@SETTINGS
@given(st.text(max_size=200))
def test_random_yaml_text_as_a_config_file(text):
    path = _DIR / f"c{next(_COUNTER)}.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        TrainConfig.from_yaml(path)
    except SeglabError as e:
        assert str(path) in str(e) or "config" in str(e)
