"""Preprocessing: geometry, normalisation and modes checked against hand computations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from convmlp import PRETRAINED_CFGS
from convmlp.preprocess import (
    ImageError,
    crop_geometry,
    load_image,
    preprocess,
    target_size,
    to_rgb,
)

MEAN = np.array(PRETRAINED_CFGS["s"].mean, dtype=np.float32)
STD = np.array(PRETRAINED_CFGS["s"].std, dtype=np.float32)


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def _normalise_by_hand(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32) / np.float32(255.0)
    return ((x - MEAN) / STD).transpose(2, 0, 1)[None]


# --------------------------------------------------------------------------- geometry


def test_default_is_timm_eval_transform_on_landscape_image() -> None:
    # 300x400 (HxW), crop_pct 0.875: shorter side -> floor(224 / 0.875) = 256,
    # longer side int(256 * 400 / 300) = 341; crop offsets round(16.0)=16, round(58.5)=58.
    img = _noise(300, 400)
    x = preprocess(img, "s")
    expected_img = img.resize((341, 256), Image.Resampling.BICUBIC).crop((58, 16, 58 + 224, 16 + 224))
    expected = _normalise_by_hand(np.asarray(expected_img))
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x, expected)


def test_portrait_geometry() -> None:
    geo = crop_geometry((500, 333), (224, 224), 0.875)
    assert geo.resize == (int(256 * 500 / 333), 256)  # width binds
    top = int(round((geo.resize[0] - 224) / 2))
    assert geo.box == (top, 16, 224, 224)


@pytest.mark.parametrize("image_hw", [(300, 400), (400, 300), (97, 131), (1000, 40), (224, 224)])
@pytest.mark.parametrize("target", [(224, 224), (192, 320), (320, 192), (33, 500)])
def test_crop_covers_target_and_keeps_aspect(image_hw: tuple[int, int], target: tuple[int, int]) -> None:
    crop_pct = 0.875
    geo = crop_geometry(image_hw, target, crop_pct)
    rh, rw = geo.resize
    top, left, th, tw = geo.box
    assert (th, tw) == target
    # the resized image covers floor(target / crop_pct) on both sides, one side exactly
    sh, sw = int(target[0] / crop_pct), int(target[1] / crop_pct)
    assert rh >= sh and rw >= sw and (rh == sh or rw == sw)
    # aspect ratio kept to within truncation of one pixel
    assert abs(rh / rw - image_hw[0] / image_hw[1]) <= 1.0 / min(rh, rw) + 1e-9
    # centred crop inside the resized image
    assert 0 <= top and top + th <= rh and 0 <= left and left + tw <= rw
    assert abs((rh - th) - 2 * top) <= 1 and abs((rw - tw) - 2 * left) <= 1


def test_non_square_resolution_by_hand() -> None:
    # 300x400 to a 160x256 crop: covers floor(160/.875)=182 x floor(256/.875)=292;
    # height needs 182/300=0.607, width 292/400=0.73 -> width binds: 292 wide, int(292*300/400)=219 high
    img = _noise(300, 400, seed=1)
    x = preprocess(img, "s", resolution=(160, 256))
    top = int(round((219 - 160) / 2))  # 29.5 -> 30 (half to even)
    expected_img = img.resize((292, 219), Image.Resampling.BICUBIC).crop((18, top, 18 + 256, top + 160))
    assert x.shape == (1, 3, 160, 256)
    np.testing.assert_array_equal(x, _normalise_by_hand(np.asarray(expected_img)))


def test_int_resolution_is_square_and_crop_pct_is_read_from_cfg() -> None:
    cfg = dataclasses.replace(PRETRAINED_CFGS["s"], crop_pct=1.0)
    img = _noise(64, 96)
    x = preprocess(img, cfg, resolution=64)
    # crop_pct 1: no enlargement, the 64x96 image is only centre-cropped to 64x64
    np.testing.assert_array_equal(x, _normalise_by_hand(np.asarray(img)[:, 16:80]))


def test_native_keeps_size_and_only_normalises() -> None:
    img = _noise(45, 77)
    x = preprocess(img, "s", resolution="native")
    np.testing.assert_array_equal(x, _normalise_by_hand(np.asarray(img)))


def test_native_refuses_small_images() -> None:
    with pytest.raises(ImageError, match=">= 32"):
        preprocess(_noise(31, 200), "s", resolution="native")


@pytest.mark.parametrize("bad", [16, (224, 20), "huge"])
def test_bad_resolution(bad: object) -> None:
    with pytest.raises(ValueError):
        target_size("s", bad)  # type: ignore[arg-type]


def test_normalisation_of_a_flat_colour() -> None:
    img = Image.new("RGB", (300, 200), (128, 64, 255))
    x = preprocess(img, "s")
    for c, v in enumerate((128, 64, 255)):
        want = (v / 255.0 - PRETRAINED_CFGS["s"].mean[c]) / PRETRAINED_CFGS["s"].std[c]
        np.testing.assert_allclose(x[0, c], want, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- modes


def test_grey_is_replicated_to_three_channels() -> None:
    grey = Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 60), dtype=np.uint8), mode="L")
    rgb = np.asarray(to_rgb(grey))
    assert rgb.shape == (50, 60, 3)
    assert (rgb[..., 0] == np.asarray(grey)).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_rgba_drops_alpha() -> None:
    rgba = Image.new("RGBA", (40, 40), (10, 20, 30, 0))
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [10, 20, 30]


def test_palette_with_transparency() -> None:
    pal = Image.new("P", (40, 40), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.info["transparency"] = 1
    assert np.asarray(to_rgb(pal))[5, 5].tolist() == [200, 100, 50]


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    a = np.array([[0, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    img16 = Image.fromarray(a)
    assert img16.mode.startswith("I;16")
    assert np.asarray(to_rgb(img16))[0, :, 0].tolist() == [0, 128, 255]
    assert np.asarray(to_rgb(img16.convert("I")))[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1", "I;16", "YCbCr"])
def test_every_mode_gives_the_same_batch_shape(mode: str) -> None:
    img = _noise(70, 90).convert(mode) if mode != "I;16" else Image.fromarray(
        np.full((70, 90), 30000, dtype=np.uint16)
    )
    x = preprocess(img, "s", resolution=64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32 and np.isfinite(x).all()


# --------------------------------------------------------------------------- files


def test_load_image_png_and_exif_orientation(tmp_path) -> None:
    img = _noise(20, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    img.save(tmp_path / "o.jpg", exif=exif)
    loaded = load_image(tmp_path / "o.jpg")
    assert loaded.mode == "RGB" and loaded.size == (20, 40)  # (W, H) swapped
    Image.new("L", (33, 35), 7).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").getpixel((0, 0)) == (7, 7, 7)


def test_load_image_errors(tmp_path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="not an image") as info:
        load_image(tmp_path / "notes.jpg")
    assert str(tmp_path / "notes.jpg") in str(info.value) and "\n" not in str(info.value)
    _noise(64, 64).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


# --------------------------------------------------------------------------- the one decoder


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    from tests.image_kinds import make_image_kinds

    return make_image_kinds(tmp_path_factory.mktemp("kinds"))


@pytest.mark.parametrize("kind", ["png16", "exif6_jpeg", "cmyk_jpeg", "palette_png", "rgba_png", "la_png",
                                  "float_tiff"])
def test_each_kind_decodes_to_its_expected_array_from_a_path_bytes_or_an_image(kinds, kind: str) -> None:
    path, expected = kinds[kind]
    from_path = np.asarray(load_image(path))
    np.testing.assert_array_equal(from_path, expected)
    np.testing.assert_array_equal(np.asarray(load_image(path.read_bytes())), expected)  # a server's request
    with Image.open(path) as opened:  # deploy.load().classify([Image.open(f)])
        np.testing.assert_array_equal(np.asarray(load_image(opened)), expected)
    with Image.open(path) as opened:  # preprocess applies the same orientation and conversion
        np.testing.assert_array_equal(preprocess(opened, "s"), preprocess(load_image(path), "s"))


def test_orientation_is_applied_once() -> None:
    img = _noise(20, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    once = load_image(buf.getvalue())
    assert once.size == (20, 40)
    np.testing.assert_array_equal(np.asarray(load_image(once)), np.asarray(once))  # no second rotation


@pytest.mark.parametrize(("values", "expected"), [
    (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),  # 0..1
    (np.array([[0.0, 100.0, 255.0]], np.float32), [0, 100, 255]),  # 0..255
    (np.array([[0.0, 257.0 * 100, 65535.0]], np.float32), [0, 100, 255]),  # 16-bit range
    (np.array([[np.nan, 0.25, 1.0]], np.float32), [0, 64, 255]),
])
def test_float_images_are_scaled_not_clipped(values: np.ndarray, expected: list[int]) -> None:
    assert np.asarray(to_rgb(Image.fromarray(values, mode="F")))[0, :, 0].tolist() == expected


def test_arrays_follow_the_same_rules() -> None:
    from convmlp.preprocess import from_array

    a16 = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    assert np.asarray(from_array(a16))[0, :, 0].tolist() == [0, 128, 255]
    f = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32).repeat(2, axis=0)  # 2x1x3 in 0..1
    assert np.asarray(from_array(f))[0, 0].tolist() == [0, 128, 255]
    with pytest.raises(ImageError, match="HxW"):
        from_array(np.zeros((2, 2, 5), np.uint8))


def test_bytes_that_are_not_an_image_are_one_line() -> None:
    with pytest.raises(ImageError, match=r"^28 bytes: not an image") as info:
        load_image(b"these bytes are not an image")
    assert "\n" not in str(info.value)
