"""Image preprocessing for ConvMLP: the one function every predictor and client uses.

Driven by the variant's weights config (``PRETRAINED_CFGS[variant]``: input size,
``crop_pct``, mean, std, interpolation), following timm's evaluation transform:

1. apply the EXIF orientation and convert to 8-bit RGB (grey, palette, RGBA, CMYK, 16-bit and float
   are scaled, never clipped: ``load_image`` is the one decoder, for files, request bytes and images);
2. resize (bicubic, Pillow) so that the image covers ``floor(H / crop_pct) x
   floor(W / crop_pct)`` keeping its aspect ratio; for a square target this is
   timm's "shorter side to ``floor(size / crop_pct)``";
3. centre-crop to ``H x W``;
4. scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel;
5. return a float32 NCHW batch of one.

``resolution="native"`` skips steps 2-3: the image keeps its own size (ConvMLP
takes any size >= 32 x 32). docs/predict.md spells every step out for C++ users.

    >>> from convmlp.preprocess import load_image, preprocess
    >>> x = preprocess(load_image("cat.jpg"), "s")          # (1, 3, 224, 224) float32
    >>> x = preprocess(load_image("cat.jpg"), "s", resolution=(320, 480))
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from .model import ConvMLP
from .weights import INTERPOLATIONS, PRETRAINED_CFGS, PretrainedCfg

__all__ = [
    "ImageError",
    "ResolutionLike",
    "CropGeometry",
    "NATIVE",
    "MIN_SIDE",
    "INTERPOLATIONS",
    "load_image",
    "orient",
    "to_rgb",
    "from_array",
    "target_size",
    "crop_geometry",
    "preprocess",
    "IMAGE_EXTENSIONS",
    "list_images",
]

NATIVE = "native"
MIN_SIDE = ConvMLP.min_input_size

#: ``None`` (the config's input size), an int (square), ``(H, W)`` or ``"native"``.
ResolutionLike = int | tuple[int, int] | Literal["native"] | None

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

assert tuple(_PIL_FILTERS) == INTERPOLATIONS  # every filter a weights config may name has a PIL filter


class ImageError(OSError):
    """A file is missing, unreadable, not an image, or an image ConvMLP cannot take."""


@dataclass(frozen=True)
class CropGeometry:
    """Where an ``image_size`` image goes: resized to ``resize`` then cropped at ``box``.

    Sizes are ``(height, width)``; ``box`` is ``(top, left, height, width)`` in the
    resized image.
    """

    image_size: tuple[int, int]
    resize: tuple[int, int]
    box: tuple[int, int, int, int]


def load_image(source: str | os.PathLike[str] | bytes | Image.Image) -> Image.Image:
    """The one image decoder: a file, encoded bytes (a server's request) or a Pillow image as upright 8-bit RGB.

    Opens fully (first frame), applies the EXIF orientation (``ImageOps.exif_transpose``), then ``to_rgb``.
    ``predict``, ``evaluate``, calibration, ``deploy.load().classify`` and ``serve``'s image model all call
    it, so a file, its bytes and ``Image.open(file)`` give the same array. Raises ``ImageError`` with one
    line naming the file (or the byte count) and the problem.
    """
    if isinstance(source, Image.Image):
        return orient(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        name, opener = f"{len(raw)} bytes", (lambda: Image.open(io.BytesIO(raw)))
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, not an image")
        name, opener = str(path), (lambda: Image.open(path))
    try:
        with opener() as opened:
            opened.load()
            return orient(opened)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (or a format Pillow cannot read)") from None
    except Exception as exc:  # truncated/corrupt data raises OSError, SyntaxError, ValueError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ImageError(f"{name}: cannot read image ({first[:160]})") from None


def orient(img: Image.Image) -> Image.Image:
    """``img`` upright (its EXIF orientation applied; idempotent) and as 8-bit RGB (``to_rgb``)."""
    try:
        upright = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        upright = img
    return to_rgb(upright if upright is not None else img)


def _to_8bit(a: np.ndarray, kind: str) -> np.ndarray:
    """Integer (16/32-bit) or float pixel values scaled to 0..255 (never clipped at 255).

    Integers are 16-bit samples: ``round(clamp(v, 0, 65535) / 257)``. Floats are 0..1 when their largest
    finite value is <= 1 (``round(v * 255)``), else 0..255 when <= 255, else 16-bit samples as above;
    NaN is 0.
    """
    a = np.asarray(a, dtype=np.float64)
    if kind == "f":
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        if top <= 1.0:
            a = a * 255.0
        elif top > 255.0:
            a = np.clip(a, 0, 65535) / 257.0
    else:
        a = np.clip(a, 0, 65535) / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB.

    Alpha is dropped (as timm/torchvision loaders do: ``RGBA``, ``LA``, ``PA``, palette transparency),
    palettes are expanded, CMYK/YCbCr/LAB are converted by Pillow, 16/32-bit integer grey (``I;16*``,
    ``I``) and float grey (``F``) are scaled to 0..255 (``_to_8bit``) instead of clipped.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = _to_8bit(np.asarray(img), "f" if mode == "F" else "i")
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")  # honours palette transparency without a warning
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"cannot convert a {mode!r} image to RGB ({exc})") from None


def from_array(a: np.ndarray) -> Image.Image:
    """An HxW (grey) or HxWx3/4 array as 8-bit RGB: uint8 as is, other integers and floats as ``_to_8bit``."""
    a = np.asarray(a)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageError(f"an image array is HxW or HxWx3 (or x4, x1), got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "biuf":
            raise ImageError(f"an image array of dtype {a.dtype} is not pixels")
        a = _to_8bit(a, "f" if a.dtype.kind == "f" else "i") if a.dtype.kind != "b" else a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.ndim if a.ndim == 2 else a.shape[2]]
    return to_rgb(Image.fromarray(np.ascontiguousarray(a), mode=mode))


def _filter(name: str) -> Image.Resampling:
    try:
        return _PIL_FILTERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}: use one of {', '.join(_PIL_FILTERS)}") from None


def _cfg(cfg: str | PretrainedCfg) -> PretrainedCfg:
    if isinstance(cfg, PretrainedCfg):
        return cfg
    try:
        return PRETRAINED_CFGS[cfg.lower()]
    except KeyError:
        raise ValueError(f"unknown ConvMLP variant {cfg!r}: choose one of {', '.join(PRETRAINED_CFGS)}") from None


def target_size(cfg: str | PretrainedCfg, resolution: ResolutionLike = None) -> tuple[int, int] | None:
    """The ``(H, W)`` crop for ``resolution``; ``None`` for ``"native"``. Refuses sides < 32."""
    if resolution is None:
        _, h, w = _cfg(cfg).input_size
    elif isinstance(resolution, str):
        if resolution.lower() != NATIVE:
            raise ValueError(f"resolution must be an int, (H, W) or 'native', got {resolution!r}")
        return None
    elif isinstance(resolution, int):
        h = w = resolution
    else:
        h, w = (int(v) for v in resolution)
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"resolution {h}x{w}: ConvMLP needs height and width >= {MIN_SIDE}")
    return h, w


def crop_geometry(image_size: tuple[int, int], target: tuple[int, int], crop_pct: float) -> CropGeometry:
    """Resize and centre-crop geometry of an ``image_size`` (H, W) image for a ``target`` (H, W) crop.

    The image is scaled (aspect ratio kept) so that it covers ``floor(H / crop_pct) x
    floor(W / crop_pct)``: the side that needs the larger scale gets exactly its size,
    the other ``int(scale * side)`` (truncated, as torchvision does). The crop offset
    is ``round((resized - target) / 2)`` with Python's round-half-to-even.
    """
    ih, iw = image_size
    th, tw = target
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    sh, sw = math.floor(th / crop_pct), math.floor(tw / crop_pct)
    if sh * iw >= sw * ih:  # height binds: sh / ih >= sw / iw
        rh, rw = sh, max(sw, int(sh * iw / ih))
    else:
        rh, rw = max(sh, int(sw * ih / iw)), sw
    top = int(round((rh - th) / 2.0))
    left = int(round((rw - tw) / 2.0))
    return CropGeometry((ih, iw), (rh, rw), (top, left, th, tw))


def preprocess(
    image: Image.Image,
    cfg: str | PretrainedCfg = "s",
    *,
    resolution: ResolutionLike = None,
) -> np.ndarray:
    """One image as the ``(1, 3, H, W)`` float32 batch ConvMLP-``cfg`` expects.

    ``cfg`` is a variant name or a ``PretrainedCfg``; ``resolution`` is ``None``
    (the config's input size, 224), an int, ``(H, W)``, or ``"native"`` (keep the
    image's size: no resize, no crop). Raises ``ImageError`` for a native image
    smaller than 32 x 32 and ``ValueError`` for a bad ``resolution``.
    """
    pcfg = _cfg(cfg)
    target = target_size(pcfg, resolution)
    img = orient(image)
    if target is None:
        if min(img.height, img.width) < MIN_SIDE:
            raise ImageError(
                f"image is {img.height}x{img.width} (HxW); ConvMLP needs both sides >= {MIN_SIDE} "
                "(use a fixed --resolution to resize it)"
            )
    else:
        geo = crop_geometry((img.height, img.width), target, pcfg.crop_pct)
        (rh, rw), (top, left, th, tw) = geo.resize, geo.box
        if (rh, rw) != (img.height, img.width):
            img = img.resize((rw, rh), resample=_filter(pcfg.interpolation))
        img = img.crop((left, top, left + tw, top + th))
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(pcfg.mean, dtype=np.float32)
    std = np.asarray(pcfg.std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


#: file extensions read as images by the commands that walk folders (calibration, evaluation)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif")


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``root`` (recursive, by extension, case-insensitive), sorted by relative path.

    Hidden files and folders (``.name``) are skipped. The files are not opened here.
    """
    root = Path(root)
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
