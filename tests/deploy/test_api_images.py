"""``deploy.load(...).classify``: a PIL image and its path give the same answer on every backend; a closed
model raises the documented ``DeployError``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import deploy
from deploy.errors import DeployError
from tests.image_kinds import make_image_kinds


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_an_image_and_its_path_give_the_same_answer(backend, s_graph_pair, tmp_path):
    pytest.importorskip("openvino") if backend == "openvino" else None
    files = [p for p, _ in make_image_kinds(tmp_path / "kinds", size=(64, 80)).values()]
    source = "s" if backend == "torch" else s_graph_pair["fp32"]
    with deploy.load(source, backend=None if backend == "torch" else backend,
                     precision="fp32" if backend == "openvino" else None) as model:
        opened = [Image.open(f) for f in files]
        by_image, by_path = model.classify(opened), model.classify(files)
        by_bytes = model.classify([f.read_bytes() for f in files])
        for im in opened:
            im.close()
    for a, b, c in zip(by_image, by_path, by_bytes, strict=True):
        assert [s.index for s in a] == [s.index for s in b] == [s.index for s in c]
        np.testing.assert_allclose([s.probability for s in a], [s.probability for s in b], atol=1e-6)


def test_a_closed_model_raises_deploy_error(s_graph_pair):
    model = deploy.load(s_graph_pair["fp32"])
    model.close()
    with pytest.raises(DeployError, match="closed"):
        model(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(DeployError, match="closed"):
        model.classify([Image.new("RGB", (64, 64))])
