"""Shape parsing, profile validation, profile selection and validation shapes."""

from __future__ import annotations

import pytest

from deploy.errors import DeployError
from deploy.modelfile.profiles import (
    DEFAULT_PROFILE,
    ShapeProfile,
    check_input_names,
    parse_shape,
    select_profile,
    validation_shapes,
)

SMALL = ShapeProfile((1, 3, 64, 64), (2, 3, 128, 128), (4, 3, 256, 256))
BIG = ShapeProfile((8, 3, 224, 224), (16, 3, 224, 224), (32, 3, 512, 512))


def test_parse_shape() -> None:
    assert parse_shape("1x3x128x96") == (1, 3, 128, 96)
    assert parse_shape(" 8X3X224X224 ") == (8, 3, 224, 224)
    for bad in ("1x3x128", "1x3x128x128x1", "axbxcxd", "", "1,3,128,128"):
        with pytest.raises(ValueError, match="shape"):
            parse_shape(bad)


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        (((2, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64)), "batch must satisfy min <= opt <= max"),
        (((1, 3, 64, 64), (1, 3, 128, 64), (1, 3, 96, 64)), "height must satisfy"),
        (((1, 4, 64, 64), (1, 4, 64, 64), (1, 4, 64, 64)), "3 channels"),
        (((1, 3, 16, 64), (1, 3, 64, 64), (1, 3, 64, 64)), ">= 32"),
        (((0, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64)), "batch must be >= 1"),
    ],
)
def test_profile_validation(dims: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShapeProfile(*dims)


def test_profile_parse_roundtrip_and_covers() -> None:
    p = ShapeProfile.parse("1x3x64x64:2x3x128x128:4x3x256x256")
    assert p == SMALL
    assert ShapeProfile.parse(str(p)) == p
    assert ShapeProfile.from_dict(p.to_dict()) == p
    assert p.to_dict() == {"min": [1, 3, 64, 64], "opt": [2, 3, 128, 128], "max": [4, 3, 256, 256]}
    assert p.covers((3, 3, 100, 255))
    assert not p.covers((5, 3, 100, 100))
    assert not p.covers((1, 3, 63, 100))
    assert not p.covers((1, 3, 100))
    with pytest.raises(ValueError, match="MIN:OPT:MAX"):
        ShapeProfile.parse("1x3x64x64:2x3x128x128")
    with pytest.raises(ValueError, match="min/opt/max"):
        ShapeProfile.from_dict({"min": [1, 3, 64, 64]})


def test_select_profile_prefers_nearest_opt() -> None:
    overlapping = ShapeProfile((1, 3, 64, 64), (8, 3, 224, 224), (32, 3, 512, 512))
    profiles = [SMALL, overlapping, BIG]
    assert select_profile(profiles, (2, 3, 128, 128)) == 0  # both 0 and 1 cover; 0's opt is exact
    assert select_profile(profiles, (8, 3, 224, 224)) == 1  # 1 and 2 cover; 1's opt is exact
    assert select_profile(profiles, (16, 3, 256, 256)) == 2
    assert select_profile(profiles, (5, 3, 64, 64)) == 1  # only 1 covers


def test_select_profile_error_lists_all_profiles() -> None:
    with pytest.raises(DeployError) as info:
        select_profile([SMALL, BIG], (64, 3, 224, 224))
    msg = str(info.value)
    assert "64x3x224x224" in msg and str(SMALL) in msg and str(BIG) in msg


def test_validation_shapes_cover_min_opt_max_and_odd_sizes() -> None:
    shapes = validation_shapes([SMALL, BIG])
    assert len(shapes) == len(set(shapes))
    for p in (SMALL, BIG):
        assert {p.min, p.opt, p.max} <= set(shapes)
    for s in shapes:
        assert SMALL.covers(s) or BIG.covers(s)
    assert any(s[2] % 32 and s[3] % 32 for s in shapes), "need sides not divisible by 32"
    assert any(s[2] != s[3] for s in shapes), "need a non-square shape"
    fixed = ShapeProfile.fixed((1, 3, 224, 224))
    assert validation_shapes([fixed]) == [(1, 3, 224, 224)]


def test_default_profile_is_valid_and_sane() -> None:
    assert DEFAULT_PROFILE.covers((1, 3, 224, 224))
    assert DEFAULT_PROFILE.covers(DEFAULT_PROFILE.opt)


def test_check_input_names() -> None:
    check_input_names(["input"], ["input"])
    with pytest.raises(DeployError, match=r"does not have.*\['images'\]|\['images'\].*does not have"):
        check_input_names(["images"], ["input"])
    with pytest.raises(DeployError, match="no shape profile"):
        check_input_names(["input"], ["input", "mask"])
