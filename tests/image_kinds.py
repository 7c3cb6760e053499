"""Image files of each kind the one decoder (``convmlp.preprocess.load_image``) must read alike, made with
Pillow, each with the 8-bit RGB array it must decode to, computed here by hand (numpy), not by the decoder.

Used by tests/convmlp/test_preprocess.py (the decoder) and tests/deploy/test_serve.py (the image endpoint,
predict, evaluate and ``classify`` answering the same on each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["KINDS", "make_image_kinds"]

#: the kinds of issue 27: a 16-bit PNG, an EXIF-rotated JPEG, a CMYK JPEG, a palette PNG, an RGBA PNG
#: (and LA and float grey, which the same rules cover)
KINDS = ("png16", "exif6_jpeg", "cmyk_jpeg", "palette_png", "rgba_png", "la_png", "float_tiff")


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB picture (JPEG keeps it well), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = [np.sin(6 * x * rng.uniform(0.5, 2) + 4 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)]
    return np.clip(np.stack(base, -1) * 110 + 128, 0, 255).astype(np.uint8)


def make_image_kinds(folder: Path, size: tuple[int, int] = (150, 200)) -> dict[str, tuple[Path, np.ndarray]]:
    """``{kind: (file, expected 8-bit RGB HxWx3)}`` for each of ``KINDS``, written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    out: dict[str, tuple[Path, np.ndarray]] = {}

    # 16-bit grey: values across the whole 0..65535 range, scaled (round(v / 257)), not clipped at 255
    a16 = (np.linspace(0, 65535, h * w).reshape(h, w)).astype(np.uint16)
    p = folder / "grey16.png"
    Image.fromarray(a16).save(p)
    g = np.rint(a16.astype(np.float64) / 257).astype(np.uint8)
    out["png16"] = (p, np.repeat(g[..., None], 3, axis=2))

    # JPEG stored sideways with EXIF orientation 6 (shown rotated 90 degrees clockwise)
    p = folder / "exif6.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_smooth(h, w, 1)).save(p, quality=95, exif=exif)
    with Image.open(p) as stored:  # the decoded pixels as stored, before orientation
        raw = np.asarray(stored.convert("RGB"))
    out["exif6_jpeg"] = (p, np.ascontiguousarray(np.rot90(raw, k=-1)))

    # CMYK JPEG: Pillow's CMYK -> RGB (no ICC profile), the documented rule
    p = folder / "cmyk.jpg"
    Image.fromarray(_smooth(h, w, 2)).convert("CMYK").save(p, quality=95)
    with Image.open(p) as stored:
        assert stored.mode == "CMYK"
        c = np.asarray(stored).astype(np.float64)
    out["cmyk_jpeg"] = (p, np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8))

    # palette PNG with a transparent entry: colours looked up, transparency dropped
    p = folder / "palette.png"
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = rng.integers(0, 256, (h, w), dtype=np.uint8)
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette(palette.ravel().tolist())
    pal.save(p, transparency=5)
    out["palette_png"] = (p, palette[idx])

    # RGBA PNG, alpha varying: alpha dropped, not blended
    p = folder / "rgba.png"
    rgba = np.concatenate([_smooth(h, w, 4), rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(p)
    out["rgba_png"] = (p, rgba[..., :3].copy())

    # grey + alpha PNG
    p = folder / "la.png"
    la = np.stack([_smooth(h, w, 5)[..., 0], rng.integers(0, 256, (h, w), dtype=np.uint8)], axis=2)
    Image.fromarray(la, mode="LA").save(p)
    out["la_png"] = (p, np.repeat(la[..., :1], 3, axis=2))

    # 32-bit float grey TIFF in 0..1: round(v * 255)
    p = folder / "float.tif"
    f = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    Image.fromarray(f, mode="F").save(p)
    gf = np.rint(f.astype(np.float64) * 255).astype(np.uint8)
    out["float_tiff"] = (p, np.repeat(gf[..., None], 3, axis=2))
    return out
