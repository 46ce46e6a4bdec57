"""The README's screenshot of `seglab serve`'s page, from a real run: export a run to ONNX, serve the .onnx, drive the
page in headless Chromium with a real photo, save docs/deploy-page.png.

    python docs/make_deploy_screenshot.py RUN_DIR PHOTO [--out docs/deploy-page.png]

Uses Debian's chromium + chromium-driver through Selenium (nothing is downloaded), a server on a free 127.0.0.1 port.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory or checkpoint")
    p.add_argument("photo", help="the photo to upload")
    p.add_argument("--out", default=str(ROOT / "docs" / "deploy-page.png"))
    p.add_argument("--width", type=int, default=1100)
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        subprocess.run([sys.executable, "-m", "seglab.cli", "export", args.run, "--format", "onnx", "--out",
                        str(model)], env=env, check=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "seglab.cli", "serve", str(model), "--port", str(port)],
                                  env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2) as r:
                        if json.load(r)["status"] == "ok":
                            break
                except OSError:
                    time.sleep(0.2)
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", f"--user-data-dir={tmp}/profile", f"--window-size={args.width},1400",
                        "--hide-scrollbars"):
                options.add_argument(arg)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            try:
                driver.get(url + "/")
                wait = WebDriverWait(driver, 60)
                wait.until(lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
                driver.find_element(By.ID, "file").send_keys(str(Path(args.photo).resolve()))
                wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-ready") == "1")
                bottom = driver.execute_script(
                    "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)")
                ratio = driver.execute_script("return window.devicePixelRatio")
                driver.save_screenshot(args.out)
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(timeout=10)
    from PIL import Image

    with Image.open(args.out) as im:  # cropped to the page's content, a small PNG for the repository
        im = im.crop((0, 0, im.width, min(im.height, int(bottom * ratio))))
        im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
