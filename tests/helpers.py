"""Helpers shared by several test files: writers of folder datasets' masks, and a local archive server."""

from __future__ import annotations

import json
import re
import tarfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

# ------------------------------------------------------------------------------------------- folder datasets

H, W = 24, 32


def mask_ids(i: int, k: int = 2) -> np.ndarray:
    """A seeded mask of class ids 0..k-1 in blocks (so nearest resizing and JPEG keep large flat areas)."""
    rng = np.random.default_rng(i)
    blocks = rng.integers(0, k, size=(H // 8, W // 8))
    blocks.flat[:k] = np.arange(k)  # every class in every mask
    m = np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
    return np.roll(m, (3, 3), axis=(0, 1))  # edges off the JPEG 8x8 grid, so JPEG masks get noisy edges


def make(root: Path, n: int, write_mask, suffix: str = ".png", classes=None, split: str | None = None,
         seed: int = 0) -> Path:
    """root/[split/]images/*.png and masks/*<suffix>, mask i written by write_mask(path, i)."""
    base = root / split if split else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = np.random.default_rng(100 + i + 1000 * seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(base / "images" / f"im{i:03d}.png")
        write_mask(base / "masks" / f"im{i:03d}{suffix}", i)
    if classes is not None:
        (root / "classes.json").write_text(json.dumps(classes))
    return root


def grey(values: dict[int, int] | None = None, k: int = 2, fmt: str | None = None, **save):
    """A writer of grey masks: class id c stored as values[c] (default c)."""
    def write(p: Path, i: int) -> None:
        ids = mask_ids(i, k)
        lut = np.array([values.get(c, c) if values else c for c in range(256)], dtype=np.uint8)
        Image.fromarray(lut[ids], mode="L").save(p, format=fmt, **save)
    return write


# ------------------------------------------------------------------------------------------- local server


class ServerState:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # URL path -> body
        self.mode = "ok"  # ok | cut (every transfer stops halfway) | cut_once | ignore_range
        self.fail_left = 0  # answer 503 this many times first
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def for_file(self, name: str) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/" + name)]


class ArchiveHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        record = {"path": self.path, "range": self.headers.get("Range"), "status": None, "sent": 0}
        with state.lock:
            state.requests.append(record)
            fail = state.fail_left > 0
            state.fail_left -= fail
            mode = state.mode
            if mode == "cut_once":
                state.mode = "ok"
                mode = "cut"
        if fail:
            record["status"] = 503
            self.send_error(503, "busy")
            return
        body = state.files.get(self.path)
        if body is None:
            record["status"] = 404
            self.send_error(404)
            return
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and mode != "ignore_range":
            start, status = int(m.group(1)), 206
            if start >= len(body):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        record["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if mode == "cut":
            payload = payload[: len(payload) // 2]  # then the connection closes, short of Content-Length
            self.close_connection = True
        self.wfile.write(payload)
        self.wfile.flush()
        record["sent"] = len(payload)


@contextmanager
def serve(files: Mapping[str, bytes], folder: str) -> Iterator[tuple[str, ServerState]]:
    """A local server of `files` (name -> body) at http://127.0.0.1:PORT/FOLDER/NAME; yields (base URL, state)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.daemon_threads = True
    state = ServerState()
    state.files = {f"/{folder}/{name}": data for name, data in files.items()}
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{folder}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    data = b"evil\n" if kind == tarfile.REGTYPE else b""
    info.size = len(data)
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info, data


# ---- system programs and optional packages: skip outside CI with how to install them, fail under CI=true ----
def require_module(name: str, install: str):
    """Import and return the Python module `name` a test needs. When it is missing the test skips with `install`
    as the way to get it, except under CI=true, where the dev extra installs it, so a missing module fails it."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(name)
    except ImportError:
        why = f"needs the {name} module (install: {install})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)


def require_programs(*names: str, install: str) -> list[str]:
    """The paths of system programs a test needs. Missing ones skip the test with `install` as the way to get
    them, except under CI=true, where the test must run, so a missing program fails it."""
    import os
    import shutil

    import pytest

    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        why = f"needs {', '.join(missing)} (install: {install})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)
    return [found[name] for name in names]
