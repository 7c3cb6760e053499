"""Shared fixtures: trained-looking models and checkpoints in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convmlp import create_model
from convmlp.weights import synthesize_weights


def trained_like(variant: str = "s", seed: int = 0, **kw):
    """A model whose weights and BatchNorm statistics are away from their init values."""
    return synthesize_weights(create_model(variant, **kw), seed).eval()


@pytest.fixture
def make_checkpoint(tmp_path: Path):
    """Write a checkpoint of ``variant`` as the official code saves it (plain state dict by default)."""

    def make(variant: str = "s", *, wrap: str | None = None, prefix: str = "", seed: int = 0, **kw) -> Path:
        state = {prefix + k: v for k, v in trained_like(variant, seed, **kw).state_dict().items()}
        obj = {wrap: state, "epoch": 300} if wrap else state
        path = tmp_path / f"convmlp_{variant}_{wrap or 'plain'}_{seed}.pth"
        torch.save(obj, path)
        return path

    return make
