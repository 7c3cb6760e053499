"""Pretrained weights: per-variant configs (data) and strict checkpoint loading.

The weights config is what the exporter, the predictor and Triton read for
input size, normalisation and class count; nothing else re-types these numbers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PretrainedCfg",
    "PRETRAINED_CFGS",
    "CheckpointError",
    "checkpoint_filter_fn",
    "read_checkpoint",
    "CFG_KEYS",
    "CfgError",
    "check_cfg",
    "checkpoint_cfg",
    "resolve_cfg",
    "head_classes",
    "load_state",
    "load_checkpoint",
    "load_pretrained",
    "file_sha256",
    "synthesize_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: the resize filters a weights config may name (``convmlp.preprocess`` maps each to PIL's)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a variant's ImageNet-1k weights live and how its inputs were prepared."""

    url: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    num_classes: int = 1000
    top1: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_URL = "https://shi-labs.com/projects/convmlp/checkpoints/convmlp_{}_imagenet.pth"

PRETRAINED_CFGS: dict[str, PretrainedCfg] = {
    "s": PretrainedCfg(url=_URL.format("s"), top1=76.8),
    "m": PretrainedCfg(url=_URL.format("m"), top1=79.0),
    "l": PretrainedCfg(url=_URL.format("l"), top1=80.2),
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class CfgError(ValueError):
    """A preprocessing value that contradicts itself (zero std, crop outside (0, 1], a side under 32...)."""


#: the preprocessing fields a fine-tuned checkpoint (or the export's options) may set
CFG_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation")


def check_cfg(cfg: PretrainedCfg, source: str = "") -> PretrainedCfg:
    """``cfg`` if its preprocessing is consistent, else ``CfgError`` naming the value (and ``source``)."""
    from .model import ConvMLP

    where = f" ({source})" if source else ""
    size = tuple(cfg.input_size)
    if len(size) != 3 or size[0] != 3 or any(not isinstance(v, int) for v in size):
        raise CfgError(f"input_size must be [3, H, W], got {list(size)}{where}")
    if min(size[1:]) < ConvMLP.min_input_size:
        raise CfgError(f"input size {size[1]}x{size[2]} is under ConvMLP's {ConvMLP.min_input_size} px{where}")
    for key in ("mean", "std"):
        vals = tuple(getattr(cfg, key))
        if len(vals) != 3:
            raise CfgError(f"{key} needs 3 values (R G B), got {len(vals)}{where}")
    if any(not v > 0 for v in cfg.std):
        raise CfgError(f"std must be positive, got {list(cfg.std)}{where}")
    if not 0 < cfg.crop_pct <= 1:
        raise CfgError(f"crop_pct must be in (0, 1], got {cfg.crop_pct:g}{where}")
    if cfg.interpolation not in INTERPOLATIONS:
        raise CfgError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {cfg.interpolation!r}{where}")
    return cfg


def _cfg_values(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``CFG_KEYS`` of a timm-style ``pretrained_cfg`` dict, typed; ``CfgError`` for a malformed one."""
    out: dict[str, Any] = {}
    try:
        if raw.get("input_size") is not None:
            size = [int(v) for v in raw["input_size"]]
            out["input_size"] = tuple(size if len(size) == 3 else [3, *size])
        for key in ("mean", "std"):
            if raw.get(key) is not None:
                out[key] = tuple(float(v) for v in raw[key])
        if raw.get("crop_pct") is not None:
            out["crop_pct"] = float(raw["crop_pct"])
        if raw.get("interpolation") is not None:
            out["interpolation"] = str(raw["interpolation"]).lower()
    except (TypeError, ValueError):
        raise CfgError(f"{source}: pretrained_cfg is not timm-style (input_size [3, H, W], mean/std [r, g, b], "
                       "crop_pct, interpolation)") from None
    return out


def checkpoint_cfg(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The preprocessing a checkpoint records in a timm-style ``pretrained_cfg`` (``{"state_dict": ...,
    "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [...], ...}}``), typed; {} when it has none."""
    try:
        raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception:  # read_checkpoint names what is wrong with the file
        return {}
    cfg = raw.get("pretrained_cfg") if isinstance(raw, Mapping) else None
    if not isinstance(cfg, Mapping):
        return {}
    return _cfg_values(cfg, str(path))


def resolve_cfg(base: PretrainedCfg, given: Mapping[str, Any], checkpoint: Mapping[str, Any] | None = None,
                source: str = "") -> PretrainedCfg:
    """``base`` (the variant's config) with the checkpoint's recorded preprocessing, then the ``given``
    values (not None) over it, checked by ``check_cfg``."""
    import dataclasses

    changes = {k: v for k, v in (checkpoint or {}).items() if k in CFG_KEYS}
    changes.update({k: v for k, v in given.items() if k in CFG_KEYS and v is not None})
    return check_cfg(dataclasses.replace(base, **changes), source)


def checkpoint_filter_fn(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` and strip ``module.`` prefixes."""
    state = checkpoint
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError("not a state dict (expected a mapping of parameter names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"not a state dict: entry {k!r} is not a named tensor")
        out[k.removeprefix("module.")] = v
    return out


def _strict_load(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: shape mismatch at {key}: checkpoint {list(state[key].shape)} "
                f"vs model {list(tensor.shape)} (is it another variant or num_classes?)"
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise CheckpointError(f"{source}: not a checkpoint of this model: " + ", ".join(parts))
    model.load_state_dict(state, strict=True)


def _drop_unused(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``norm``/``head`` when the model has none (features-only or headless trunk)."""
    own = model.state_dict()
    return {
        k: v for k, v in state.items() if k in own or not k.startswith(("norm.", "head."))
    }


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of a local checkpoint, unwrapped by ``checkpoint_filter_fn``.

    Raises ``CheckpointError`` with one line naming the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load on arbitrary bytes raises many classes (KeyError, EOFError...)
        text = str(exc).strip()
        if not text or "Weights only load failed" in text:
            why = "not a torch.save file of tensors"
        else:
            why = text.splitlines()[0][:160]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None
    try:
        return checkpoint_filter_fn(raw)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def head_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """How many classes the checkpoint's head has (rows of ``head.weight``); None without a head."""
    head = state.get("head.weight")
    return int(head.shape[0]) if isinstance(head, torch.Tensor) and head.dim() == 2 else None


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` (from ``read_checkpoint``) strictly into ``model``; ``norm``/``head`` are dropped
    when the model has none. ``CheckpointError`` names the first key that does not fit."""
    _strict_load(model, _drop_unused(model, dict(state)), source)


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load a local checkpoint strictly into ``model``; return its sha256.

    Raises ``CheckpointError`` with one line naming the problem.
    """
    load_state(model, read_checkpoint(path), str(path))
    return file_sha256(path)


def load_pretrained(model: nn.Module, variant: str, *, progress: bool = True) -> str:
    """Fetch the official checkpoint through the torch.hub cache and load it strictly.

    Returns the sha256 of the cached file. If the model's head has another class
    count than the checkpoint (fine-tuning), the head is left at its init.
    """
    cfg = PRETRAINED_CFGS[variant]
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(cfg.url).name
    try:
        state = torch.hub.load_state_dict_from_url(
            cfg.url, map_location="cpu", progress=progress, weights_only=True
        )
    except Exception as exc:  # network, HTTP, corrupt download: all one message
        raise CheckpointError(
            f"could not fetch ConvMLP-{variant.upper()} weights from {cfg.url} ({type(exc).__name__}); "
            f"download it elsewhere and pass it with --weights, or place it at {hub_dir / filename}"
        ) from None
    state = _drop_unused(model, checkpoint_filter_fn(state))
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and head.out_features != cfg.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    _strict_load(model, state, cfg.url)
    return file_sha256(hub_dir / filename)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def synthesize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give ``model`` deterministic weights that look trained, for validation without a checkpoint.

    Freshly initialised ConvMLP has zero biases, unit norms, identity BatchNorm
    statistics and a head of std 0.02, so its logits are nearly uniform and hide
    numerical errors. This draws every BatchNorm statistic, norm affine, bias and
    the head away from their init values from ``seed`` (same seed, same weights,
    on any machine with the same PyTorch), keeping activations in FP16 range.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(shape: torch.Size, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(rand(m.weight.shape, 0.4, 1.2))
                m.bias.copy_(rand(m.bias.shape, -0.1, 0.1))
                m.running_mean.copy_(rand(m.running_mean.shape, -0.15, 0.15))
                m.running_var.copy_(rand(m.running_var.shape, 0.5, 2.0))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(rand(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(rand(m.bias.shape, -0.06, 0.06))
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                gain = 3.0 if name == "head" else 1.0
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * gain / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(rand(m.bias.shape, -0.03, 0.03))
    return model
