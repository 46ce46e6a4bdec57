"""The HTTP API and the browser page of `seglab serve` (FastAPI; uvicorn runs it).

    POST /predict    an image (multipart field "file", or a raw image/* body) -> the class-id mask as PNG (default),
                     ?format=json (per-class pixel shares + the mask as base64 PNG) or ?format=overlay (PNG);
                     the model's name and the inference milliseconds ride in X-Seglab-Model / X-Inference-Ms
                     headers (and in the JSON).
    GET  /health     {"status": "ok", ...}
    GET  /model      name, backend, classes with colours, image size, interpolation, parameters, upload limit
    GET  /           the page (static/: index.html, app.js, style.css; no CDN, no build step)

Bad input is answered 4xx with {"error": "..."} naming the problem (not an image, empty upload, decompression bomb,
over the size limit, wrong content type); any other failure is a 500 for that request only.

Concurrency: decoded uploads wait in a bounded queue (503 "busy" when it is full) for one worker that runs the
model on whatever has queued up, up to max_batch images at once, in a thread off the event loop: under load the
batches grow by themselves, and memory is bounded by max_queue decoded images (each at most max_pixels).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.io import decode_image
from ..errors import SeglabError
from ..inference import InferenceConfig
from ..palette import overlay

STATIC = Path(__file__).parent / "static"
FORMATS = ("png", "json", "overlay")
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in a multipart body


class _Batcher:
    """One worker task: takes what has queued up (at most max_batch), predicts it in a thread, answers each."""

    def __init__(self, segmenter: Any, max_batch: int, max_queue: int, inference: InferenceConfig):
        self.segmenter = segmenter
        self.inference = inference
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="seglab-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._queue: asyncio.Queue | None = None

    def _ensure_worker(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # (Re)started in the running loop: a test client may run each request in a loop of its own.
            self._loop, self._queue = loop, asyncio.Queue(maxsize=self.max_queue)
            self._task = loop.create_task(self._run(self._queue))
        return self._queue

    async def submit(self, image: Image.Image) -> tuple[np.ndarray, float, int]:
        """(mask (H, W) uint8, inference ms of the batch it ran in, that batch's size)."""
        queue = self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait((image, future))
        except asyncio.QueueFull:
            raise HTTPException(503, f"server busy: {self.max_queue} images are waiting; retry shortly") from None
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            images = [image for image, _ in batch]
            t0 = time.perf_counter()
            try:
                masks = await loop.run_in_executor(self.executor, self.segmenter.predict_masks, images, self.inference)
            except Exception as e:  # noqa: BLE001 - answered to the requests of this batch; the worker goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            ms = (time.perf_counter() - t0) * 1000
            for (_, future), mask in zip(batch, masks):
                if not future.done():
                    future.set_result((mask, ms, len(batch)))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes: never more than that in memory."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"upload of {int(length) / 2**20:.1f} MB is over the limit of "
                                 f"{limit / 2**20:.1f} MB (--max-upload-mb)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"upload is over the limit of {limit / 2**20:.1f} MB (--max-upload-mb)")
    return bytes(body)


async def _upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """(image bytes, file name) from a multipart upload (field "file") or a raw image/* body."""
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        body = await _read_body(request, max_bytes + _MULTIPART_SLACK)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        except HTTPException:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed multipart body
            raise HTTPException(400, f"malformed multipart upload ({e})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            files = [v for v in form.values() if not isinstance(v, str)]
            if not files:
                raise HTTPException(400, "no file in the upload: send the image as the multipart field 'file'")
            upload = files[0]
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if part_type and not (part_type.startswith("image/") or part_type == "application/octet-stream"):
            raise HTTPException(415, f"wrong content type {part_type!r} for the file {upload.filename!r}: send an "
                                     "image (image/jpeg, image/png, ...)")
        data = await upload.read()
        name = upload.filename or "upload"
    elif kind.startswith("image/") or kind == "application/octet-stream":
        data, name = await _read_body(request, max_bytes), "upload"
    else:
        raise HTTPException(415, f"wrong content type {kind or '(none)'!r}: POST the image as multipart/form-data "
                                 "(field 'file') or as a raw image/* body")
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload of {len(data) / 2**20:.1f} MB is over the limit of "
                                 f"{max_bytes / 2**20:.1f} MB (--max-upload-mb)")
    if not data:
        raise HTTPException(400, f"empty upload: {name} has 0 bytes")
    return data, name


def _decode(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    try:
        return decode_image(data, name, max_pixels=max_pixels)
    except SeglabError as e:
        msg = str(e)
        status = 413 if "decompression-bomb" in msg else 400
        if "not an image" in msg:
            msg = f"not an image: {name} is not a format Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF)"
        elif status == 413:
            msg = f"decompression bomb: {name} declares too many pixels ({msg.split('(', 1)[-1].rstrip(').')})"
        raise HTTPException(status, msg) from None


def create_app(
    model_path: str | os.PathLike[str] | None = None,
    max_upload_mb: float = 20,
    *,
    segmenter: Any = None,
    device: str = "auto",
    max_batch: int = 8,
    max_queue: int = 32,
    max_pixels: int | None = 64_000_000,
    inference: InferenceConfig | None = None,
) -> FastAPI:
    """The FastAPI app serving one model: a checkpoint or run directory (PyTorch) or an .onnx file (ONNX Runtime,
    no torch), or an already loaded `segmenter` (segmenter.Segmenter); `inference` says how every image is run
    (whole / slide / TTA; default whole). See the module docstring for the routes."""
    if segmenter is None:
        if model_path is None:
            raise SeglabError("create_app needs a model: a checkpoint, a run directory or an .onnx file")
        from ..segmenter import load_segmenter

        segmenter = load_segmenter(model_path, device=device)
    if not max_upload_mb > 0:
        raise SeglabError(f"--max-upload-mb must be positive, not {max_upload_mb}")
    max_bytes = int(max_upload_mb * 2**20)
    inference = inference or InferenceConfig()
    batcher = _Batcher(segmenter, max_batch, max_queue, inference)
    decoding = asyncio.Semaphore(max(2, max_batch))  # decoded images in flight before the queue: bounded too
    num_classes = len(segmenter.class_names)
    classes = [{"id": i, "name": n, "color": "#%02x%02x%02x" % tuple(segmenter.colors[i])}
               for i, n in enumerate(segmenter.class_names)]
    info = {"name": segmenter.name, "backend": segmenter.backend, "classes": classes,
            "image_size": segmenter.image_size, "interpolation": segmenter.interpolation,
            "parameters": segmenter.parameters, "max_upload_mb": max_upload_mb, "inference": inference.describe()}

    app = FastAPI(title="seglab", description=f"Semantic segmentation with {segmenter.name}")
    app.state.segmenter = segmenter

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "status": exc.status_code}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request: {where}", "status": 422}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc})", "status": 500},
                            status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": segmenter.name, "backend": segmenter.backend}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return info

    @app.post("/predict")
    async def predict(request: Request, format: str = "png", alpha: float = 0.45) -> Response:
        if format not in FORMATS:
            raise HTTPException(400, f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        if not 0.0 <= alpha <= 1.0:
            raise HTTPException(400, f"alpha must be in [0, 1], not {alpha}")
        data, name = await _upload(request, max_bytes)
        async with decoding:
            image = await asyncio.to_thread(_decode, data, name, max_pixels)
            del data
            mask, ms, batch = await batcher.submit(image)
        headers = {"X-Seglab-Model": segmenter.name, "X-Inference-Ms": f"{ms:.2f}", "X-Batch-Size": str(batch)}
        if format == "png":
            return Response(await asyncio.to_thread(_png, Image.fromarray(mask)), media_type="image/png",
                            headers=headers)
        if format == "overlay":
            picture = await asyncio.to_thread(lambda: _png(overlay(image, mask, num_classes, alpha)))
            return Response(picture, media_type="image/png", headers=headers)
        counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
        shares = counts / max(1, mask.size)
        body = {
            "model": segmenter.name, "inference_ms": round(ms, 2), "batch_size": batch,
            "width": image.width, "height": image.height,
            "classes": [dict(c, share=float(s), pixels=int(n)) for c, s, n in zip(classes, shares, counts)],
            "mask_png_base64": base64.b64encode(await asyncio.to_thread(_png, Image.fromarray(mask))).decode(),
        }
        return JSONResponse(body, headers=headers)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(model_path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20,
          device: str = "auto", inference: InferenceConfig | None = None) -> None:
    """Run the app on uvicorn until interrupted (what `seglab serve` does)."""
    import uvicorn

    app = create_app(model_path, max_upload_mb, device=device, inference=inference)
    print(f"seglab serve: {app.state.segmenter.name} ({app.state.segmenter.backend}) on http://{host}:{port}/",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
