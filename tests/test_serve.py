"""`seglab serve`: the API through FastAPI's test client, hostile uploads, the page in a real headless Chromium
against a real server subprocess, and a bounded concurrent load with 0 failures."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import DEPLOY_CLASSES
from helpers import require_programs
from seglab.serve import create_app

SRC = str(Path(__file__).resolve().parents[1] / "src")


def photo_bytes(h: int = 50, w: int = 70, fmt: str = "JPEG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 120)], -1) + rng.integers(0, 30, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(tiny_vit_checkpoint):
    with TestClient(create_app(tiny_vit_checkpoint, device="cpu")) as c:
        yield c


def upload(client, data: bytes, name: str = "cat.jpg", ctype: str = "image/jpeg", query: str = ""):
    return client.post(f"/predict{query}", files={"file": (name, data, ctype)})


def test_health_and_model(client):
    assert client.get("/health").json() == {"status": "ok", "model": "vit", "backend": "pytorch"}
    info = client.get("/model").json()
    assert [c["name"] for c in info["classes"]] == DEPLOY_CLASSES
    assert all(c["color"].startswith("#") and len(c["color"]) == 7 for c in info["classes"])
    assert info["image_size"] == 32 and info["parameters"] > 0 and info["max_upload_mb"] == 20


def test_predict_mask_json_and_overlay(client):
    data = photo_bytes(50, 70)
    r = upload(client, data)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seglab-model"] == "vit" and float(r.headers["x-inference-ms"]) > 0
    mask = np.asarray(Image.open(io.BytesIO(r.content)))
    assert mask.shape == (50, 70) and mask.max() < 3  # class ids at the photo's own size
    j = upload(client, data, query="?format=json").json()
    assert j["model"] == "vit" and j["inference_ms"] > 0 and (j["width"], j["height"]) == (70, 50)
    assert [c["name"] for c in j["classes"]] == DEPLOY_CLASSES
    assert abs(sum(c["share"] for c in j["classes"]) - 1) < 1e-9
    same = np.asarray(Image.open(io.BytesIO(base64.b64decode(j["mask_png_base64"]))))
    assert np.array_equal(same, mask)
    assert [c["pixels"] for c in j["classes"]] == np.bincount(mask.ravel(), minlength=3).tolist()
    r = upload(client, data, query="?format=overlay")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (70, 50)
    # A raw image body works as well as a multipart upload.
    r = client.post("/predict", content=photo_bytes(20, 30, "PNG"), headers={"content-type": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (30, 20)


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12000, 10000)).save(buf, "PNG")  # 120 megapixels in ~15 kB
    return buf.getvalue()


@pytest.mark.parametrize("case", ["not_an_image", "empty", "bomb", "wrong_part_type", "wrong_body_type",
                                  "no_file", "bad_format", "truncated"])
def test_hostile_uploads_get_a_4xx_json_naming_the_problem(client, case):
    good = photo_bytes()
    if case == "not_an_image":
        r, status, words = upload(client, b"GIF89a but not really" * 10, "x.gif", "image/gif"), 400, "not an image"
    elif case == "empty":
        r, status, words = upload(client, b""), 400, "empty upload"
    elif case == "bomb":
        r, status, words = upload(client, _bomb(), "bomb.png", "image/png"), 413, "decompression bomb"
    elif case == "wrong_part_type":
        r, status, words = upload(client, b"hello", "notes.txt", "text/plain"), 415, "wrong content type"
    elif case == "wrong_body_type":
        r = client.post("/predict", content=b"{}", headers={"content-type": "application/json"})
        status, words = 415, "wrong content type"
    elif case == "no_file":
        r = client.post("/predict", files={"note": (None, b"a text field, no file")})  # multipart, no file
        status, words = 400, "no file"
    elif case == "bad_format":
        r, status, words = upload(client, good, query="?format=gif"), 400, "unknown format"
    else:
        r, status, words = upload(client, good[: len(good) // 2]), 400, "cat.jpg"
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert client.get("/health").status_code == 200 and upload(client, good).status_code == 200  # still serving


def test_upload_over_the_limit_is_refused(tiny_vit_checkpoint):
    with TestClient(create_app(tiny_vit_checkpoint, max_upload_mb=0.01, device="cpu")) as c:
        r = upload(c, photo_bytes(200, 200, "PNG"))
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]
        assert upload(c, photo_bytes(20, 20)).status_code == 200


def test_onnx_app_gives_the_checkpoints_masks(tiny_vit_onnx, client):
    with TestClient(create_app(tiny_vit_onnx)) as c:
        assert c.get("/health").json()["backend"] == "onnxruntime"
        assert [x["name"] for x in c.get("/model").json()["classes"]] == DEPLOY_CLASSES
        data = photo_bytes(64, 48)
        a = np.asarray(Image.open(io.BytesIO(upload(c, data).content)))
        b = np.asarray(Image.open(io.BytesIO(upload(client, data).content)))
        assert a.shape == b.shape == (64, 48) and (a != b).mean() < 0.002


# ------------------------------------------------------------------ a real server: the page and a load test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_vit_checkpoint, tmp_path_factory):
    """`seglab serve` started as the README says, as a subprocess on a free 127.0.0.1 port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "seglab.cli", "serve", str(tiny_vit_checkpoint), "--host",
                                 "127.0.0.1", "--port", str(port), "--device", "cpu"],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "the server did not come up in 60 s:\n" + log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_page_in_headless_chromium(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = require_programs("chromium", "chromedriver",
                                              install="apt-get install chromium chromium-driver")
    photo = tmp_path / "pet.jpg"
    photo.write_bytes(photo_bytes(240, 320))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "vit" in d.find_element(By.ID, "model-info").text)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-ready") == "1")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#legend .legend-row")) == 3)
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#legend .class-name")]
        assert names == DEPLOY_CLASSES
        shares = [float(e.text.rstrip(" %")) for e in driver.find_elements(By.CSS_SELECTOR, "#legend .class-share")]
        assert abs(sum(shares) - 100) < 0.5
        assert "ms" in driver.find_element(By.ID, "latency").text
        size = driver.execute_script("const c = document.getElementById('overlay'); return [c.width, c.height];")
        assert size == [320, 240]  # the mask at the photo's own size
        driver.execute_script("const s = document.getElementById('opacity'); s.value = 25;"
                              "s.dispatchEvent(new Event('input'));")
        assert driver.execute_script("return document.getElementById('overlay').style.opacity") == "0.25"
        shot = tmp_path / "page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        failed = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not failed, failed
    finally:
        driver.quit()


def test_bounded_concurrent_load_has_no_failures(server, tmp_path):
    """200 requests from 8 concurrent clients to 127.0.0.1; reports p50/p99 latency; 0 failures."""
    bodies = [photo_bytes(60 + 7 * i, 80 + 5 * i, seed=i) for i in range(8)]
    boundary = "seglabloadtest"

    def one(i: int) -> tuple[bool, float]:
        data = bodies[i % len(bodies)]
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p{i}.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(server + "/predict?format=json", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                ok = r.status == 200 and json.load(r)["model"] == "vit"
        except OSError:
            ok = False
        return ok, (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    wall = time.perf_counter() - t0
    lat = np.array([ms for _, ms in results])
    failures = sum(not ok for ok, _ in results)
    report = {"requests": 200, "clients": 8, "failures": failures, "seconds": round(wall, 2),
              "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
              "requests_per_s": round(200 / wall, 1)}
    print("load test:", report)
    (tmp_path / "load.json").write_text(json.dumps(report))
    assert failures == 0, report
    assert threading.active_count() < 50  # the clients are gone; nothing kept running


def test_serve_refuses_a_missing_model(tmp_path):
    from seglab.errors import SeglabError

    with pytest.raises(SeglabError, match="nothing.onnx"):
        create_app(tmp_path / "nothing.onnx")
