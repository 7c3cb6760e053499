"""The INT8 gate on more than one kind of weights (``tests.draws``):

- the synthetic weights pass plain INT8 (``test_int8.py``'s export, which also checks that the fallback
  moved nothing);
- the official initialisation with BatchNorm drawn away from 1/0 passes plain INT8 (here);
- synthetic weights with a 64x activation outlier fail it, name the layer, and pass with the fallback
  (``test_int8_fallback.py``).

A network really trained (ConvMLP-S on handwritten digits) is measured in ``benchmarks/trained_accuracy.py``:
it fails plain INT8 on its stem convolution, and the fallback moves that one layer to float."""

from __future__ import annotations

from pathlib import Path

import torch

from export.pipeline import ExportConfig, run_export
from tests.draws import default_init_bn
from tests.photos import CALIBRATION_PHOTOS, make_photo_set

SHAPES = [(1, 3, 224, 224), (2, 3, 160, 192)]


def test_official_init_with_perturbed_batchnorm_passes_plain_int8(tmp_path: Path) -> None:
    model = default_init_bn("s", seed=0)
    calibration = make_photo_set(tmp_path / "cal", 40, sources=CALIBRATION_PHOTOS, size=(160, 160))[0].parent
    ck = tmp_path / "default_init_bn.pth"
    torch.save(model.state_dict(), ck)
    result = run_export(ExportConfig(variant="s", output_dir=tmp_path / "out", weights=ck, int8=True,
                                     calibration=calibration, calibration_count=32, int8_fallback="off",
                                     shapes=SHAPES))
    assert result.passed, result.failures
    int8 = next(g for g in result.graphs if g.name == "int8")
    worst = max(o.rel_l2 for c in int8.validation.cases for o in c.outputs)
    assert worst <= 0.1 and any(c.photos for c in int8.validation.cases)  # real photographs checked
    assert result.report["int8"]["fallback"] is None  # plain INT8: nothing moved back to float
    # the draw is not the synthetic one: BatchNorm statistics really were drawn away from 1/0
    bn = model.get_submodule("tokenizer.block.1")
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
