// seglab's page: pick or drop a photo, POST it to /predict?format=json, draw the mask in the class colours over
// the photo (opacity slider), list each class's share and the latency. Plain JS, no external resource.
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModel() {
  try {
    const r = await fetch("/model");
    model = await r.json();
    $("model-info").textContent = `${model.name} (${model.backend}), ${model.classes.length} classes, ` +
      `${model.image_size}x${model.image_size} input, ${(model.parameters / 1e6).toFixed(2)}M parameters`;
  } catch (e) {
    $("model-info").textContent = "the model could not be loaded";
  }
}

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the image could not be shown"));
    img.src = src;
  });
}

async function drawOverlay(maskB64, classes) {
  // The mask PNG holds class ids as gray levels; paint each pixel in its class's colour.
  const mask = await loadImage("data:image/png;base64," + maskB64);
  const canvas = $("overlay");
  canvas.width = mask.naturalWidth;
  canvas.height = mask.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(mask, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const colours = classes.map((c) => hexToRgb(c.color));
  const d = pixels.data;
  for (let i = 0; i < d.length; i += 4) {
    const c = colours[d[i]] || [128, 128, 128];
    d[i] = c[0]; d[i + 1] = c[1]; d[i + 2] = c[2]; d[i + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
}

function showLegend(classes) {
  const body = $("legend").querySelector("tbody");
  body.innerHTML = "";
  for (const c of classes) {
    const tr = document.createElement("tr");
    tr.className = "legend-row";
    const sw = document.createElement("td");
    const span = document.createElement("span");
    span.className = "swatch";
    span.style.background = c.color;
    sw.appendChild(span);
    const name = document.createElement("td");
    name.className = "class-name";
    name.textContent = c.name;
    const share = document.createElement("td");
    share.className = "class-share";
    share.textContent = (100 * c.share).toFixed(1) + " %";
    tr.append(sw, name, share);
    body.appendChild(tr);
  }
}

function applyOpacity() {
  const v = $("opacity").value;
  $("overlay").style.opacity = v / 100;
  $("opacity-value").textContent = v + "%";
}

async function predict(file) {
  if (!file) return;
  $("overlay").dataset.ready = "";
  setStatus(`predicting ${file.name}\u2026`);
  const url = URL.createObjectURL(file);
  $("photo").src = url;
  $("under").src = url;
  const form = new FormData();
  form.append("file", file, file.name);
  const t0 = performance.now();
  try {
    const r = await fetch("/predict?format=json", { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    const total = performance.now() - t0;
    $("result").hidden = false;
    await drawOverlay(body.mask_png_base64, body.classes);
    showLegend(body.classes);
    applyOpacity();
    $("latency").textContent = `inference ${body.inference_ms.toFixed(1)} ms, round trip ${total.toFixed(0)} ms`;
    setStatus(`${file.name}: ${body.width}x${body.height}, segmented by ${body.model}`);
    $("overlay").dataset.ready = "1";  // everything is on the page (the tests and the screenshot wait for this)
  } catch (e) {
    setStatus(`Could not segment ${file.name}: ${e.message}`, true);
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  predict(e.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("file").addEventListener("change", (e) => predict(e.target.files[0]));
$("opacity").addEventListener("input", applyOpacity);
loadModel();
