"""Memory estimates before work: huge requests are refused with one line, exit 2; profile needs no memory."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import cli
from convmlp import create_model
from convmlp.profile import count_macs, largest_activation
from deploy.resources import TooLarge, check_fits, estimate_bytes, gib


def test_largest_activation_is_a_real_tensor_size():
    import torch

    model = create_model("s").eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.numel()) if isinstance(o, torch.Tensor) else None)
             for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 128))
    for h in hooks:
        h.remove()
    assert largest_activation(model, 96, 128) == max(seen + [3 * 96 * 128])


def test_estimate_scales_with_pixels_and_batch():
    a = estimate_bytes("s", 1, 224, 224)
    assert estimate_bytes("s", 4, 224, 224) == pytest.approx(4 * a, rel=1e-6)
    assert estimate_bytes("s", 1, 448, 448) == pytest.approx(4 * a, rel=1e-2)
    assert estimate_bytes(None, 2, 100, 100) == 2 * 3 * 100 * 100 * 4  # input only without a variant
    assert a > 3 * 224 * 224 * 4


def test_check_fits_names_the_case():
    check_fits("s", [(1, 224, 224)], available=2**30)
    with pytest.raises(TooLarge, match=r"100000x100000 at batch 1 needs ~[\d,]+ GiB \(input alone 112 GiB\); "
                                       r"this machine has 1 GiB memory available"):
        check_fits("s", [(1, 224, 224), (1, 100000, 100000)], available=2**30)
    assert gib(3 * 2**20) == "3 MiB"


@pytest.mark.parametrize(
    "args",
    [
        ["benchmark", "-v", "s", "-r", "100000"],
        ["predict", "{img}", "-v", "s", "-r", "100000"],
    ],
)
def test_huge_resolution_is_one_line_exit_2(args, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(img)
    res = CliRunner().invoke(cli.main, [a.format(img=img) for a in args])
    assert res.exit_code == 2 and "100000x100000 at batch 1 needs" in res.output and "Traceback" not in res.output


def test_profile_counts_any_size_without_memory():
    res = CliRunner().invoke(cli.main, ["profile", "-v", "s", "-r", "100000", "--json"])
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(res.stdout)
    small = count_macs(create_model("s").to("meta"), 1000, 1000)
    assert data["gmacs"] == pytest.approx(small / 1e9 * 1e4, rel=1e-2)  # MACs scale with pixels


def test_memory_error_is_one_line_exit_1(monkeypatch):
    import deploy.commands.bench as bench

    def boom(*a, **k):
        raise MemoryError("Unable to allocate 112. GiB for an array")

    monkeypatch.setattr(bench, "run_benchmark", boom)
    res = CliRunner().invoke(cli.main, ["benchmark", "-v", "s", "-r", "64", "--iterations", "1"])
    assert res.exit_code == 1 and res.output.strip().startswith("Error: out of memory (Unable to allocate")
