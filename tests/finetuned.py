"""A fine-tuned network as users have them: ConvMLP-S trained from scratch on scikit-learn's handwritten
digits at 32 px, with the digits' own mean/std, saved as a checkpoint (optionally with a timm-style
``pretrained_cfg``). Shared by tests/export/test_finetuned.py and benchmarks/finetuned_digits.py.

- ``write_digits``: ``train/<digit>/*.png`` and ``test/<digit>/*.png`` (ImageFolder), 80/20 stratified;
- ``digits_stats``: the per-channel mean/std of the training images (in [0, 1]);
- ``train_digits``: the network, trained for ``steps`` AdamW steps on the training split as the export
  will preprocess it (``convmlp.preprocess`` with the 32-px config).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["SIZE", "write_digits", "digits_stats", "digits_cfg", "train_digits", "save_checkpoint"]

#: the resolution the network is trained at (and its images are written at)
SIZE = 32


def write_digits(out: Path, size: int = SIZE, seed: int = 0) -> tuple[Path, Path]:
    """The digits as ``size`` x ``size`` RGB PNGs in ``out/train`` and ``out/test``; the two folders."""
    from PIL import Image
    from sklearn.model_selection import train_test_split

    from tests.draws import digits_images

    images, labels = digits_images(size)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                           random_state=seed)
    for split, idx in (("train", idx_train), ("test", idx_test)):
        for i in idx:
            folder = out / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return out / "train", out / "test"


def digits_stats(train_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the images under ``train_dir``, in [0, 1] (rounded to 4 places)."""
    from PIL import Image

    x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255
                  for p in sorted(train_dir.rglob("*.png"))])
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def digits_cfg(train_dir: Path, size: int = SIZE):
    """ConvMLP-S's config with the digits' preprocessing: ``size`` px, their mean/std, no crop."""
    from convmlp import PRETRAINED_CFGS

    mean, std = digits_stats(train_dir)
    return dataclasses.replace(PRETRAINED_CFGS["s"], input_size=(3, size, size), mean=mean, std=std, crop_pct=1.0,
                               interpolation="bilinear", num_classes=10)


def train_digits(train_dir: Path, cfg, steps: int, seed: int = 0, lr: float = 5e-4,
                 batch: int = 32) -> tuple[torch.nn.Module, dict]:
    """ConvMLP-S with 10 classes trained for ``steps`` steps on ``train_dir`` preprocessed by ``cfg``."""
    from convmlp import create_model
    from convmlp.preprocess import load_image, preprocess

    files = sorted(train_dir.rglob("*.png"))
    x = torch.from_numpy(np.concatenate([preprocess(load_image(p), cfg) for p in files]))
    y = torch.tensor([int(p.parent.name) for p in files])
    torch.manual_seed(seed)
    model = create_model("s", num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(files), (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), {"steps": steps, "batch": batch, "train_images": len(files),
                          "train_s": round(time.perf_counter() - t0, 1)}


def save_checkpoint(model: torch.nn.Module, path: Path, cfg=None) -> Path:
    """``{"state_dict": ...}``, with a timm-style ``pretrained_cfg`` of ``cfg``'s preprocessing when given."""
    obj: dict = {"state_dict": model.state_dict()}
    if cfg is not None:
        obj["pretrained_cfg"] = {"input_size": list(cfg.input_size), "mean": list(cfg.mean), "std": list(cfg.std),
                                 "crop_pct": cfg.crop_pct, "interpolation": cfg.interpolation,
                                 "num_classes": 10}
    torch.save(obj, path)
    return path
