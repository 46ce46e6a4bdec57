"""Oxford-IIIT Pet: download (resume, retries, MD5), safe extraction, splits and trimaps, on tiny archives.

The archives are built here with the official layout (members images/... and annotations/...) and served from
a local HTTP server on 127.0.0.1 that supports Range requests and can misbehave on purpose.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import download
from seglab.data.oxford_pets import (
    OxfordPetsSource,
    build_oxford_pets,
    download_oxford_pets,
    find_root,
)
from seglab.errors import SeglabError
from helpers import serve, tar_member

W, H = 30, 24  # every fake image and trimap: rows 0-7 pet (1), 8-15 background (2), 16-23 border (3)
TRAINVAL = ["Abyssinian_1", "Abyssinian_5", "beagle_1"]
TEST = ["Bengal_1", "boxer_2"]


# ------------------------------------------------------------------------------------------- fake dataset


def _trimap() -> Image.Image:
    arr = np.full((H, W), 2, dtype=np.uint8)
    arr[: H // 3] = 1
    arr[2 * H // 3 :] = 3
    return Image.fromarray(arr, mode="L")


def make_tree(root: Path) -> Path:
    """An extracted Oxford-IIIT Pet in miniature, with the odd image files the real one has."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    images = root / "images"
    Image.new("RGB", (W, H), (200, 30, 30)).save(images / "Abyssinian_1.jpg", quality=95)
    # Like the real Abyssinian_5.jpg: an RGBA PNG named .jpg (opaque red top half, transparent bottom half).
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[: H // 2] = (255, 0, 0, 255)
    rgba[H // 2 :] = (0, 255, 0, 0)
    Image.fromarray(rgba, mode="RGBA").save(images / "Abyssinian_5.jpg", format="PNG")
    Image.new("L", (W, H), 120).save(images / "beagle_1.jpg", format="JPEG")  # grayscale JPEG
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(images / "Bengal_1.jpg", format="JPEG")  # CMYK JPEG
    Image.new("RGB", (W, H), (10, 20, 200)).save(images / "boxer_2.jpg", quality=95)
    for name in TRAINVAL + TEST:
        _trimap().save(root / "annotations" / "trimaps" / f"{name}.png")
    ann = root / "annotations"
    (ann / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in TRAINVAL))
    (ann / "test.txt").write_text("".join(f"{n} 2 1 2\n" for n in TEST) + "\n")
    listed = "".join(f"{n} 1 1 1\n" for n in TRAINVAL + TEST)
    (ann / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n" + listed)
    return root


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The two archives' bytes, members named exactly as in the official ones."""
    tree = make_tree(tmp_path_factory.mktemp("tree"))
    out = {}
    for name, top in (("images.tar.gz", "images"), ("annotations.tar.gz", "annotations")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(tree / top, arcname=top)
        out[name] = buf.getvalue()
    return out


def md5s_of(files: dict[str, bytes]) -> dict[str, str]:
    return {name: md5(data) for name, data in files.items()}


# ------------------------------------------------------------------------------------------- local server


@pytest.fixture()
def server(archives: dict[str, bytes]):
    """A local server for the archives at http://127.0.0.1:PORT/data/NAME; yields (base URL, state)."""
    with serve(archives, "data") as served:
        yield served


@pytest.fixture(autouse=True)
def _fast_and_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(download, "_RETRY_DELAYS", (0, 0, 0))
    monkeypatch.delenv("SEGLAB_OXFORD_PETS_URL", raising=False)
    monkeypatch.setenv("SEGLAB_DATA", str(tmp_path / "seglab-data"))  # never the user's real data folder


# ---------------------------------------------------------------------------------------- download tests


def test_download_extract_and_build(server, archives, tmp_path: Path) -> None:
    url, state = server
    root = tmp_path / "pets"
    ds = build_oxford_pets("trainval", root=root, download=True, image_size=12, mirror=url,
                           cache_dir=tmp_path / "cache", quiet=False, md5s=md5s_of(archives))
    assert [r["range"] for r in state.requests] == [None, None]
    assert (root / "images.tar.gz").read_bytes() == archives["images.tar.gz"]
    assert not list(root.glob("*.part")) and not list(root.glob(".extract-*"))
    assert (root / ".images.tar.gz.extracted").exists() and (root / ".annotations.tar.gz.extracted").exists()

    assert ds.name == "oxford-pets" and ds.split == "trainval" and ds.ids == TRAINVAL
    assert ds.class_names == ("pet", "background", "border")
    assert ds.images.shape == (3, 3, 12, 12) and ds.images.dtype == torch.uint8
    assert ds.masks.shape == (3, 12, 12) and ds.masks.dtype == torch.uint8
    # Trimap 1/2/3 -> class 0 pet (top third), 1 background (middle), 2 border (bottom third).
    assert (ds.masks[:, :4] == 0).all() and (ds.masks[:, 4:8] == 1).all() and (ds.masks[:, 8:] == 2).all()
    image, mask = ds[0]
    assert image.dtype == torch.float32 and mask.dtype == torch.int64
    # Each odd image file came out as RGB with the right colours.
    img = ds.images.int()
    assert (abs(img[0, :, 0, 0] - torch.tensor([200, 30, 30])) < 12).all()  # plain JPEG
    assert img[1, :, 0, 0].tolist() == [255, 0, 0] and img[1, :, -1, 0].tolist() == [0, 0, 0]  # RGBA PNG
    assert (abs(img[2, :, 0, 0] - 120) < 4).all()  # grayscale JPEG -> equal channels

    test = build_oxford_pets("test", root=root, image_size=(12, 10), cache_dir=tmp_path / "cache", quiet=True)
    assert test.ids == TEST and test.images.shape == (2, 3, 12, 10)
    r, g, b = test.images.int()[0, :, 0, 0].tolist()  # the CMYK JPEG, red
    assert r > 200 and g < 60 and b < 60
    assert len(state.requests) == 2  # found on disk: nothing downloaded again


def test_complete_archives_are_not_downloaded_again_and_killed_extraction_is_redone(
    server, archives, tmp_path: Path
) -> None:
    url, state = server
    root = tmp_path / "pets"
    assert download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives)) == root
    assert len(state.requests) == 2
    download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    assert len(state.requests) == 2
    # An extraction killed halfway: no stamp, a leftover temporary folder, a half-written images/.
    (root / ".images.tar.gz.extracted").unlink()
    (root / ".extract-images.tar.gz" / "images").mkdir(parents=True)
    (root / "images" / "Abyssinian_1.jpg").unlink()
    download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    assert len(state.requests) == 2  # the archive on disk has the right MD5: extracted again, not fetched
    assert (root / "images" / "Abyssinian_1.jpg").exists() and (root / ".images.tar.gz.extracted").exists()
    assert not (root / ".extract-images.tar.gz").exists()


def test_resumes_a_partial_download_with_a_range_request(server, archives, tmp_path: Path) -> None:
    url, state = server
    root = tmp_path / "pets"
    root.mkdir()
    data = archives["images.tar.gz"]
    half = len(data) // 2
    (root / "images.tar.gz.part").write_bytes(data[:half])
    download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    (req,) = state.for_file("images.tar.gz")
    assert req["range"] == f"bytes={half}-" and req["status"] == 206 and req["sent"] == len(data) - half
    assert md5((root / "images.tar.gz").read_bytes()) == md5(data)
    assert not (root / "images.tar.gz.part").exists()


def test_interrupted_transfer_then_a_second_call_resumes(server, archives, tmp_path, monkeypatch) -> None:
    url, state = server
    root = tmp_path / "pets"
    data = archives["images.tar.gz"]
    monkeypatch.setattr(download, "_RETRY_DELAYS", ())  # a single try, so the first call fails
    state.mode = "cut"
    with pytest.raises(SeglabError, match="could not download .*images.tar.gz"):
        download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    assert (root / "images.tar.gz.part").stat().st_size == len(data) // 2
    assert not (root / "images.tar.gz").exists()
    state.mode = "ok"
    download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    second = state.for_file("images.tar.gz")[-1]
    assert second["range"] == f"bytes={len(data) // 2}-" and second["sent"] == len(data) - len(data) // 2
    assert (root / "images.tar.gz").read_bytes() == data


def test_a_transfer_cut_once_is_resumed_within_the_same_call(server, archives, tmp_path: Path) -> None:
    url, state = server
    state.mode = "cut_once"
    download_oxford_pets(tmp_path / "pets", mirror=url, quiet=True, md5s=md5s_of(archives))
    first, second = state.for_file("images.tar.gz")
    assert first["range"] is None and second["range"] == f"bytes={first['sent']}-"
    assert (tmp_path / "pets" / "images.tar.gz").read_bytes() == archives["images.tar.gz"]


def test_a_server_ignoring_range_restarts_from_zero(server, archives, tmp_path: Path) -> None:
    url, state = server
    root = tmp_path / "pets"
    root.mkdir()
    (root / "images.tar.gz.part").write_bytes(b"x" * 100)  # wrong bytes: only a restart gives the right MD5
    state.mode = "ignore_range"
    download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    (req,) = state.for_file("images.tar.gz")
    assert req["range"] == "bytes=100-" and req["status"] == 200
    assert (root / "images.tar.gz").read_bytes() == archives["images.tar.gz"]


def test_a_complete_part_file_answered_416_is_kept(server, archives, tmp_path: Path) -> None:
    url, state = server
    root = tmp_path / "pets"
    root.mkdir()
    (root / "images.tar.gz.part").write_bytes(archives["images.tar.gz"])
    download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s_of(archives))
    assert [r["status"] for r in state.for_file("images.tar.gz")] == [416]
    assert (root / "images.tar.gz").read_bytes() == archives["images.tar.gz"]


def test_wrong_md5_deletes_the_file_and_says_so(server, archives, tmp_path: Path) -> None:
    url, _ = server
    root = tmp_path / "pets"
    with pytest.raises(SeglabError, match="MD5 mismatch") as info:
        download_oxford_pets(root, mirror=url, quiet=True, md5s={"images.tar.gz": "0" * 32})
    assert f"{url}/images.tar.gz" in str(info.value) and "deleted" in str(info.value)
    assert not (root / "images.tar.gz").exists() and not (root / "images.tar.gz.part").exists()


def test_503_is_retried_then_succeeds(server, archives, tmp_path: Path) -> None:
    url, state = server
    state.fail_left = 2
    download_oxford_pets(tmp_path / "pets", mirror=url, quiet=True, md5s=md5s_of(archives))
    assert [r["status"] for r in state.for_file("images.tar.gz")] == [503, 503, 200]


def test_persistent_503_gives_up_with_a_clear_error(server, archives, tmp_path: Path) -> None:
    url, state = server
    state.fail_left = 100
    with pytest.raises(SeglabError, match=r"after 4 tries: HTTP 503"):
        download_oxford_pets(tmp_path / "pets", mirror=url, quiet=True, md5s=md5s_of(archives))
    assert len(state.requests) == 4


def test_404_is_not_retried(server, archives, tmp_path: Path) -> None:
    url, state = server
    with pytest.raises(SeglabError, match="HTTP 404"):
        download_oxford_pets(tmp_path / "pets", mirror=url + "/nowhere", quiet=True, md5s=md5s_of(archives))
    assert len(state.requests) == 1


def test_the_url_env_var_is_honoured_and_the_mirror_argument_wins(
    server, archives, tmp_path, monkeypatch
) -> None:
    url, state = server
    monkeypatch.setenv("SEGLAB_OXFORD_PETS_URL", url + "/")
    download_oxford_pets(tmp_path / "a", quiet=True, md5s=md5s_of(archives))
    assert [r["path"] for r in state.requests] == ["/data/images.tar.gz", "/data/annotations.tar.gz"]
    monkeypatch.setenv("SEGLAB_OXFORD_PETS_URL", url + "/wrong")
    download_oxford_pets(tmp_path / "b", mirror=url, quiet=True, md5s=md5s_of(archives))
    assert len(state.requests) == 4 and all(r["status"] == 200 for r in state.requests)


def test_a_full_disk_is_reported_clearly(server, archives, tmp_path, monkeypatch) -> None:
    url, _ = server

    class FullFile(io.BytesIO):
        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "open", lambda *a, **k: FullFile(), raising=False)
    with pytest.raises(SeglabError, match="disk is full while writing .*images.tar.gz.part"):
        download_oxford_pets(tmp_path / "pets", mirror=url, quiet=True, md5s=md5s_of(archives))


# ---------------------------------------------------------------------------------------- unsafe archives


MALICIOUS = {
    "absolute": lambda outside: [tar_member(str(outside / "abs.txt"))],
    "dotdot": lambda outside: [tar_member("../evil.txt")],
    "dotdot_nested": lambda outside: [tar_member("images/../../outside/evil.txt")],
    "symlink_absolute": lambda outside: [tar_member("images/passwd", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink_up": lambda outside: [tar_member("images/up", tarfile.SYMTYPE, "../.."),
                                   tar_member("images/up/outside/evil.txt")],
    "symlink_chain": lambda outside: [tar_member("images/d", tarfile.SYMTYPE, ".."),
                                      tar_member("images/d/e", tarfile.SYMTYPE, ".."),
                                      tar_member("images/d/e/evil.txt")],
    "hardlink_out": lambda outside: [tar_member("images/hl", tarfile.LNKTYPE, "../outside/secret.txt")],
    "fifo": lambda outside: [tar_member("images/fifo", tarfile.FIFOTYPE)],
    "char_device": lambda outside: [tar_member("images/null", tarfile.CHRTYPE)],
}
REFUSED = {
    "absolute": "abs.txt", "dotdot": "../evil.txt", "dotdot_nested": "images/../../outside/evil.txt",
    "symlink_absolute": "images/passwd", "symlink_up": "images/up", "symlink_chain": "images/d/e",
    "hardlink_out": "images/hl", "fifo": "images/fifo", "char_device": "images/null",
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_unsafe_tar_members_are_refused(case: str, server, archives, tmp_path: Path) -> None:
    url, state = server
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info, data = tar_member("images/ok.txt")
        tar.addfile(info, io.BytesIO(data))
        for info, data in MALICIOUS[case](outside):
            tar.addfile(info, io.BytesIO(data))
    evil = buf.getvalue()
    state.files["/data/images.tar.gz"] = evil
    root = tmp_path / "pets"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(SeglabError, match="refusing to extract") as info:
        md5s = {**md5s_of(archives), "images.tar.gz": md5(evil)}
        download_oxford_pets(root, mirror=url, quiet=True, md5s=md5s)
    assert REFUSED[case] in str(info.value)
    # Nothing was written anywhere but the verified archive itself.
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert set(after) - set(before) == {Path("pets"), Path("pets/images.tar.gz")}
    assert (outside / "secret.txt").read_text() == "secret"


def test_a_dot_slash_archive_is_extracted(server, archives, tmp_path: Path) -> None:
    url, state = server
    tree = make_tree(tmp_path / "tree")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tree / "images", arcname="./images")  # 'tar czf images.tar.gz ./images' style names
    state.files["/data/images.tar.gz"] = buf.getvalue()
    md5s = {**md5s_of(archives), "images.tar.gz": md5(buf.getvalue())}
    root = download_oxford_pets(tmp_path / "pets", mirror=url, quiet=True, md5s=md5s)
    assert find_root(root) == root and (root / "images" / "boxer_2.jpg").is_file()


# -------------------------------------------------------------------------------------- the source itself


def test_missing_data_without_download_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(SeglabError) as info:
        build_oxford_pets("trainval", root=tmp_path / "nothing-here", cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "seglab data download oxford-pets" in msg and "--download" in msg and "--data-root" in msg
    assert str(tmp_path / "nothing-here") in msg
    with pytest.raises(SeglabError, match="seglab data download oxford-pets"):
        build_oxford_pets("test")  # default root under $SEGLAB_DATA, empty


def test_unknown_split_lists_the_valid_ones(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets")
    for call in (lambda: OxfordPetsSource(root, "train"), lambda: build_oxford_pets("val", root=root)):
        with pytest.raises(SeglabError, match="trainval, test"):
            call()


def test_bad_options_fail_before_any_download(server, tmp_path: Path) -> None:
    url, state = server
    with pytest.raises(SeglabError, match="interpolation"):
        build_oxford_pets("trainval", root=tmp_path / "pets", download=True, mirror=url,
                          interpolation="cubic")
    with pytest.raises(SeglabError, match="image_size"):
        build_oxford_pets("trainval", root=tmp_path / "pets", download=True, mirror=url, image_size=0)
    assert state.requests == []


def test_find_root_accepts_the_folder_or_its_oxford_iiit_pet_child(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    assert find_root(root) == root
    nested = make_tree(tmp_path / "b" / "oxford-iiit-pet")
    assert find_root(tmp_path / "b") == nested
    assert find_root(tmp_path / "c") is None
    (root / "annotations" / "trainval.txt").unlink()
    assert find_root(root) is None


def test_source_reads_split_file_and_maps_trimaps(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets")
    (root / "annotations" / "test.txt").write_text("# comment\n\nBengal_1 6 1 6\n  boxer_2 2 1 2  \n")
    src = OxfordPetsSource(root, "test")
    assert len(src) == 2 and [src.sample_id(i) for i in range(2)] == TEST
    image, mask = src.load(0)
    assert image.mode == "RGB" and image.size == (W, H)
    assert mask.dtype == np.uint8 and mask.shape == (H, W) and set(np.unique(mask)) == {0, 1, 2}
    assert src.name == "oxford-pets" and src.class_names == ("pet", "background", "border")


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets")
    src = OxfordPetsSource(root, "trainval")
    before = src.fingerprint()
    assert OxfordPetsSource(root, "trainval").fingerprint() == before
    trimap = root / "annotations" / "trimaps" / "beagle_1.png"
    st = trimap.stat()
    os.utime(trimap, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert src.fingerprint() != before
    assert OxfordPetsSource(root, "test").fingerprint() != src.fingerprint()


def test_unreadable_image_and_missing_trimap_are_named(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets")
    (root / "images" / "Abyssinian_5.jpg").write_bytes(b"not an image at all")
    with pytest.raises(SeglabError, match="Abyssinian_5.jpg"):
        build_oxford_pets("trainval", root=root, image_size=8, cache_dir=tmp_path / "cache", quiet=True)
    ds = build_oxford_pets("trainval", root=root, image_size=8, cache_dir=tmp_path / "cache", quiet=True,
                           skip_bad=True)
    assert ds.ids == ["Abyssinian_1", "beagle_1"] and ds.skipped[0][0] == "Abyssinian_5"
    (root / "annotations" / "trimaps" / "boxer_2.png").unlink()
    with pytest.raises(SeglabError, match="boxer_2.*trimap.*missing"):
        build_oxford_pets("test", root=root, image_size=8, cache_dir=tmp_path / "cache", quiet=True)


def test_split_file_names_cannot_leave_the_dataset_folder(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets")
    (root / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\n../../etc/passwd 1 1 1\n")
    with pytest.raises(SeglabError, match="line 2"):
        OxfordPetsSource(root, "trainval")
