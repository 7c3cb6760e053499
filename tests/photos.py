"""Real photographs for tests and benchmarks, from the sample images scikit-image's wheel ships.

No image set can be downloaded on the machines this project is built on, but the
scikit-image wheel (in the ``test`` extra) carries a handful of real photographs.
``photographs()`` lists them; ``make_photo_set`` cuts reproducible crops from a
chosen subset so that calibration and evaluation sets of any size can be built
and kept disjoint (different source photographs).

Used by the tests and by ``benchmarks/`` (``from tests.photos import ...``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["PHOTOGRAPHS", "CALIBRATION_PHOTOS", "HELD_OUT_PHOTOS", "photographs", "make_photo_set"]

#: natural photographs (colour and grey) among scikit-image's samples; charts, text,
#: masks and synthetic patterns are left out
PHOTOGRAPHS: tuple[str, ...] = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
    "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)
#: a split with no source photograph in common, for calibration vs evaluation
CALIBRATION_PHOTOS: tuple[str, ...] = (
    "brick.png", "camera.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_right.png",
)
HELD_OUT_PHOTOS: tuple[str, ...] = tuple(p for p in PHOTOGRAPHS if p not in CALIBRATION_PHOTOS)


def _data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed (pip install 'convmlp-deploy[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def photographs(names: Sequence[str] = PHOTOGRAPHS) -> list[Path]:
    """Paths of the named sample photographs inside the installed scikit-image."""
    folder = _data_dir()
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-image has no sample photograph(s) {', '.join(missing)}")
    return paths


def make_photo_set(
    dest: Path,
    count: int,
    *,
    sources: Sequence[str] = PHOTOGRAPHS,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    quality: int = 92,
) -> list[Path]:
    """Write ``count`` JPEGs cut from ``sources``: random crops (30-100% of the shorter side),
    random horizontal flips, resized to ``size`` (w, h). Same arguments, same files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.open(p).convert("RGB") for p in photographs(sources)]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        src = images[i % len(images)]
        w, h = src.size
        side = int(min(w, h) * rng.uniform(0.3, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = src.crop((x0, y0, x0 + side, y0 + side)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        path = dest / f"{Path(sources[i % len(sources)]).stem}_{i:04d}.jpg"
        crop.save(path, quality=quality)
        out.append(path)
    return out
