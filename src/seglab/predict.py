"""Inference on images of any size, streamed: whole, sliding-window or test-time-augmented (inference.py), masks
and overlays at each image's own size.

predict() holds one batch of decoded images at a time: a background thread decodes the next batch (into a queue
of at most one batch) while the model runs on this one, and each batch's masks and overlays are written before the
next is taken, so memory stays flat whatever the number of images. It runs a checkpoint or run directory on
PyTorch, or an .onnx file on ONNX Runtime (segmenter.load_segmenter; this module imports torch only for the
former). Under
torchrun each rank predicts its own share of the inputs (rank r takes inputs r, r + N, r + 2N, ... of the sorted
list) and writes its own outputs.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from .atomic import is_disk_full
from .data.io import IMAGE_SUFFIXES, list_images, read_image
from .errors import SeglabError
from .inference import InferenceConfig, parse_tta
from .palette import overlay
from .segmenter import Segmenter, TorchSegmenter, load_segmenter


@dataclass
class Prediction:
    path: Path
    mask: np.ndarray  # (H, W) uint8 class ids at the image's original size
    image: Image.Image


class Predictions(list):
    """What predict() returns: the Prediction of each image when kept (keep=True), and always .count (images
    predicted by this process), .skipped ((path, reason) of files left out by skip_bad) and .existing (inputs
    whose outputs were already there, with skip_existing) and .smaller_than_window (slide: images that fit in one
    window, padded to it and run once, which is what whole mode would do)."""

    skipped: list[tuple[str, str]]

    def __init__(self, items: Iterable[Prediction] = (), skipped: list[tuple[str, str]] | None = None):
        super().__init__(items)
        self.skipped = list(skipped or [])
        self.count = 0
        self.existing = 0
        self.smaller_than_window = 0  # slide mode: images that fit in one window (padded to it, run once)
        self.window: tuple[int, int] | None = None  # the slide window (H, W) of the model


def _expand(inputs: Iterable[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise SeglabError(f"no images in folder {p} (looked for {', '.join(IMAGE_SUFFIXES)})")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise SeglabError(f"image not found: {p}")
    return paths


def _check_stems(paths: list[Path]) -> None:
    """Outputs are named by stem: two inputs with one stem would overwrite each other's masks."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen and seen[p.stem].resolve() != p.resolve():
            raise SeglabError(f"{seen[p.stem]} and {p} would both write {p.stem}_mask.png; rename one of them "
                              "or predict them in separate runs")
        seen[p.stem] = p


def _outputs(out_dir: Path, p: Path) -> tuple[Path, Path]:
    return out_dir / f"{p.stem}_mask.png", out_dir / f"{p.stem}_overlay.png"


def _save(picture: Image.Image, path: Path, done: int) -> None:
    """Write a PNG through a temporary file and a rename: an interrupted run never leaves a torn PNG, so
    --skip-existing can trust every file it finds. (Not atomic.atomic_write: its sweep for stale temporaries lists
    the output folder on every write, which grows with the folder; a prediction writes two files per image.)"""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        picture.save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        what = "the disk is full" if is_disk_full(e) else f"cannot write ({e})"
        raise SeglabError(f"{what}: {path}; {done} image(s) were done before it") from None


def _batches(paths: list[Path], batch_size: int, depth: int = 1) -> Iterator[list[tuple[Path, Any]]]:
    """Batches of (path, decoded image or the SeglabError reading it), decoded by a background thread that stays
    at most `depth` batches ahead: decoding overlaps the model, memory holds a bounded number of batches."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for start in range(0, len(paths), batch_size):
                batch = []
                for p in paths[start:start + batch_size]:
                    try:
                        batch.append((p, read_image(p)))
                    except SeglabError as e:
                        batch.append((p, e))
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                batch = None  # the consumer holds it now: a large photo is not kept alive here too
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            q.put(e)
        q.put(done)

    thread = threading.Thread(target=work, name="seglab-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


def _shard(paths: list[Path], segmenter: Segmenter) -> tuple[list[Path], int, int, bool]:
    """This process's share of the inputs under torchrun: rank r of N takes r, r + N, ... (every input once).

    Returns (share, rank, world size, whether this call joined the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return paths, 0, 1, False
    if isinstance(segmenter, TorchSegmenter):
        # The PyTorch path joins the process group as training does (gloo on CPU, NCCL on CUDA).
        from . import distributed

        joined = not distributed.is_distributed()
        distributed.init(segmenter.device.type)
        rank, world = distributed.rank(), distributed.world_size()
        return paths[rank::world], rank, world, joined
    rank = int(os.environ.get("RANK", "0"))  # ONNX Runtime, perhaps without torch: torchrun's environment says
    return paths[rank::world], rank, world, False


def predict(
    checkpoint: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    quiet: bool = False,
    skip_bad: bool = False,
    skip_existing: bool = False,
    keep: bool = True,
    mode: str = "whole",
    overlap: float = 0.25,
    tta: str | None = None,
) -> Predictions:
    """Predict every image (files or folders of images) with a checkpoint, a run directory's best, or an .onnx.

    With out_dir, writes <stem>_mask.png (class ids) and <stem>_overlay.png for each image, at its original size,
    batch by batch. keep=False keeps nothing in memory (the result then only counts), for folders of any size.
    skip_existing leaves out inputs whose two outputs are already in out_dir (to resume an interrupted run).
    A file that cannot be read stops the run with a message naming it (what was written so far stays); with
    skip_bad=True it is left out and listed in the result's .skipped. Under torchrun, each rank predicts and
    writes its own share of the inputs.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise SeglabError(f"batch_size must be a positive integer, not {batch_size!r}")
    if skip_existing and out_dir is None:
        raise SeglabError("skip_existing (--skip-existing) needs an output folder (--out)")
    flip, scales = parse_tta(tta)
    config = InferenceConfig(mode=mode, overlap=overlap, flip=flip, scales=scales)
    segmenter = load_segmenter(checkpoint, device=device)
    paths = _expand(inputs)
    if out_dir is not None:
        _check_stems(paths)
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SeglabError(f"cannot create the output folder {out_dir} ({e}); choose another --out") from None
    paths, rank, world, joined = _shard(paths, segmenter)
    results = Predictions()
    results.window = segmenter.geometry.window
    if skip_existing:
        todo = [p for p in paths if not all(o.exists() for o in _outputs(out_dir, p))]
        results.existing = len(paths) - len(todo)
        paths = todo
    num_classes = segmenter.num_classes
    desc = "predict" if world == 1 else f"predict (rank {rank}/{world})"
    with tqdm(total=len(paths), desc=desc, disable=quiet or rank != 0) as bar:
        for batch in _batches(paths, batch_size):
            chunk, images = [], []
            for p, im in batch:
                if isinstance(im, SeglabError):
                    if not skip_bad:
                        kept = (f"; the {results.count} mask(s) already written to {out_dir} are kept"
                                if out_dir else "")
                        raise SeglabError(f"{im}{kept}. --skip-bad (skip_bad=True) leaves such files out and lists "
                                          "them.") from None
                    results.skipped.append((str(p), str(im)))
                else:
                    chunk.append(p)
                    images.append(im)
            # Pixels as arrays, the decoded images let go: a large photo is held once while it is predicted.
            arrays = [np.asarray(im if im.mode == "RGB" else im.convert("RGB")) for im in images]
            n_batch = len(batch)
            if not keep:
                images = [None] * len(arrays)
                batch = None
            for p, im, array, mask in zip(chunk, images, arrays, segmenter.predict_masks(arrays, config)):
                if out_dir is not None:
                    mask_path, overlay_path = _outputs(out_dir, p)
                    _save(Image.fromarray(mask), mask_path, results.count)
                    _save(overlay(array, mask, num_classes), overlay_path, results.count)
                results.count += 1
                if mode == "slide":
                    vh, vw = segmenter.geometry.view_size(*array.shape[:2])
                    wh, ww = segmenter.geometry.window
                    results.smaller_than_window += vh <= wh and vw <= ww
                if keep:
                    results.append(Prediction(p, mask, im))
            bar.update(n_batch)
    if joined:  # every rank has written its share before any of them returns
        from . import distributed

        distributed.barrier()
        distributed.shutdown()
    return results
