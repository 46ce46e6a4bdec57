"""Images/s of the training data path: the article's squares against crops of images at their own size, and
seglab's batched augmentation against kornia.augmentation and albumentations doing the same work.

    PYTHONPATH=src python benchmarks/augment_speed.py [--data-root ../shared/data/oxford-iiit-pet-sample]
        [--batch 16] [--crop 256] [--batches 20] [--device cpu]

Contenders, each producing a batch of float images and int64 masks on the device from the pet sample's trainval:
  article squares (before)      the cached 128x128 uint8 squares on the device, flip + contrast (the article path)
  seglab crops + seglab aug     crops.crop_batch (random rescale 0.5-2.0 + crop + pad) then augment_batch with
                                flip, brightness, contrast, saturation, hue and blur (p 0.5): the original protocol
  seglab crops + kornia aug     the same crops, then kornia.augmentation (RandomHorizontalFlip, ColorJiggle,
                                RandomGaussianBlur) on the batch, masks through data_keys
  albumentations (CPU)          per sample on numpy: RandomScale, PadIfNeeded, RandomCrop, HorizontalFlip,
                                ColorJitter, GaussianBlur, then stacked and moved to the device
Rounds are interleaved so that a change in the machine's load touches every contender alike.
Results: benchmarks/results/augment_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (RESULTS, SAMPLE_DATA, environment, interleaved, markdown_table, save_results,
                               settings_line, summary)
from seglab.data import build_dataset
from seglab.data.augment import AugmentConfig, augment_batch
from seglab.data.crops import CropConfig, crop_batch

PHOTOMETRIC = dict(brightness=0.2, contrast=0.3, saturation=0.2, hue=0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(SAMPLE_DATA))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batches", type=int, default=20, help="batches per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args()
    device = torch.device(args.device)
    env = environment(device)
    squares = build_dataset("oxford-pets", "trainval", root=args.data_root, image_size=128, quiet=True)
    store = build_dataset("oxford-pets", "trainval", root=args.data_root, image_size=None, max_side=1024,
                          interpolation="bilinear", quiet=True)
    n, B = len(store), args.batch
    sq_images, sq_masks = squares.images.to(device), squares.masks.to(device)
    crops = CropConfig(crop_size=(args.crop, args.crop), scale_range=(0.5, 2.0))
    ours = AugmentConfig(hflip=0.5, blur=0.5, **PHOTOMETRIC)
    gen = torch.Generator().manual_seed(0)
    dgen = torch.Generator(device=device).manual_seed(0)

    def batches(step) -> float:
        t0 = time.perf_counter()
        for _ in range(args.batches):
            idx = torch.randint(0, n, (B,), generator=gen)
            x, y = step(idx)
            assert x.shape[0] == B and y.dtype == torch.int64
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.batches * B / (time.perf_counter() - t0)

    def article(idx):
        return augment_batch(sq_images[idx.to(device)], sq_masks[idx.to(device)], AugmentConfig(), dgen)

    def seglab_aug(idx):
        x, y = crop_batch(store, idx.tolist(), crops, gen, device)
        return augment_batch(x, y, ours, dgen)

    contenders = {"article squares 128 (before)": lambda: batches(article),
                  f"seglab crops {args.crop} + seglab aug": lambda: batches(seglab_aug)}
    versions = {"torch": torch.__version__}
    try:
        import kornia
        import kornia.augmentation as K

        versions["kornia"] = kornia.__version__
        pipeline = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=0.5),
            K.ColorJiggle(brightness=0.2, contrast=0.3, saturation=0.2, hue=0.05, p=1.0),
            K.RandomGaussianBlur((7, 7), (0.1, 2.0), p=0.5),
            data_keys=["input", "mask"]).to(device)

        def kornia_aug(idx):
            x, y = crop_batch(store, idx.tolist(), crops, gen, device)
            x, m = pipeline(x, y[:, None].float())
            return x, m[:, 0].long()

        contenders[f"seglab crops {args.crop} + kornia aug"] = lambda: batches(kornia_aug)
    except ImportError:
        print("kornia is not installed: its row is left out")
    try:
        import albumentations as A
        import cv2

        versions["albumentations"] = A.__version__
        compose = A.Compose([
            A.RandomScale(scale_limit=(-0.5, 1.0), p=1.0),
            A.PadIfNeeded(args.crop, args.crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255,
                          position="top_left"),
            A.RandomCrop(args.crop, args.crop),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.3, saturation=0.2, hue=0.05, p=1.0),
            A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.1, 2.0), p=0.5),
        ])

        def albu(idx):
            xs, ys = [], []
            for i in idx.tolist():
                out = compose(image=np.ascontiguousarray(store.image(i).transpose(1, 2, 0)),
                              mask=np.array(store.mask(i)))
                xs.append(torch.from_numpy(out["image"]).permute(2, 0, 1))
                ys.append(torch.from_numpy(out["mask"]))
            return (torch.stack(xs).to(device).float().div_(255.0), torch.stack(ys).to(device).long())

        contenders[f"albumentations {args.crop} (CPU, per sample)"] = lambda: batches(albu)
    except ImportError:
        print("albumentations is not installed: its row is left out")

    for fn in contenders.values():  # warm-up
        fn()
    rates = interleaved(contenders, args.rounds)
    rows = [[name, summary(v)["median"], min(v), max(v)] for name, v in rates.items()]
    table = markdown_table(["data path (batch %d)" % B, "images/s (median)", "min", "max"], rows)
    header = (f"# Training data path: images/s\n\n{settings_line(env)}; torch threads {torch.get_num_threads()}; "
              f"{', '.join(f'{k} {v}' for k, v in versions.items())}\n\nCommand: `PYTHONPATH=src python "
              f"benchmarks/augment_speed.py --batch {B} --crop {args.crop} --batches {args.batches} --rounds "
              f"{args.rounds} --device {args.device}`\n\n")
    print(header + table)
    save_results({"environment": env, "versions": versions, "rates": rates, "batch": B, "crop": args.crop},
                 header + table, args.out_dir, "augment_speed")


if __name__ == "__main__":
    main()
