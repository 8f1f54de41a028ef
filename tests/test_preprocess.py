import numpy as np
import pytest

from sigverify.data.preprocess import (
    INK_TONE_RANGE,
    PreprocessConfig,
    centred_by_mass,
    equalized_ink,
    fit_to_canvas,
    preprocess_array,
)


def page_with_stroke(h, w, box, speck=None, dark=20):
    page = np.full((h, w), 240, np.uint8)
    y0, y1, x0, x1 = box
    page[y0:y1, x0:x1] = dark
    if speck:
        page[speck[0], speck[1]] = dark
    return page


@pytest.mark.parametrize("size", [(192, 384), (224, 224), (64, 128)])
@pytest.mark.parametrize("seed", range(5))
def test_shape_and_ink_polarity_on_random_pages(size, seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(80, 400), rng.integers(80, 600)
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    y1, x1 = rng.integers(y0 + 5, h), rng.integers(x0 + 5, w)
    page = page_with_stroke(h, w, (y0, y1, x0, x1))
    out = preprocess_array(page, PreprocessConfig(height=size[0], width=size[1]))
    assert out.shape == size and out.dtype == np.uint8
    # ink is the foreground: bright (255) strokes; the padded canvas border stays 0
    assert out.max() == 255 and (out > 127).any()
    assert out[0].max() == 0 or out[:, 0].max() == 0


def test_ink_is_bright_and_paper_black():
    page = page_with_stroke(100, 300, (40, 60, 20, 280))  # a wide bar of ink
    out = preprocess_array(page, PreprocessConfig(height=64, width=128, margin=0.2))
    assert out[0, 0] == 0 and out[32, 64] == 255


def test_aspect_ratio_kept():
    page = page_with_stroke(400, 400, (100, 140, 50, 250))  # ink box 40 x 200 (1:5)
    out = preprocess_array(page, PreprocessConfig(height=100, width=100, margin=0.0))
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    ratio = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)
    assert ratio == pytest.approx(5, rel=0.1)


def test_crop_ignores_isolated_specks():
    clean = page_with_stroke(300, 600, (100, 150, 200, 400))
    specked = page_with_stroke(300, 600, (100, 150, 200, 400), speck=(5, 5))
    config = PreprocessConfig(height=64, width=128)
    np.testing.assert_array_equal(preprocess_array(clean, config), preprocess_array(specked, config))


def test_deterministic_and_grey_mode():
    page = page_with_stroke(100, 300, (40, 60, 20, 280), dark=100)
    a = preprocess_array(page, PreprocessConfig(height=32, width=64))
    np.testing.assert_array_equal(a, preprocess_array(page, PreprocessConfig(height=32, width=64)))
    grey = preprocess_array(page, PreprocessConfig(height=32, width=64, binarize=False, denoise="median"))
    assert 100 < grey.max() < 200  # keeps the ink's level (255 - 100), inverted


def test_equalized_ink_removes_the_pens_darkness_and_keeps_the_strokes_texture():
    """One signature with a dark and a light pen of the same texture: kept, their ink differs; equalized, the two
    images are the same, and the ink keeps the order of its grey levels."""
    rng = np.random.default_rng(3)
    stroke = np.zeros((120, 240), bool)
    stroke[30:50, 20:220], stroke[50:100, 100:115] = True, True
    texture = rng.integers(0, 40, stroke.shape)
    pens = [np.where(stroke, darkness + texture, 235).astype(np.uint8) for darkness in (20, 100)]
    config = dict(height=60, width=120, binarize=False, margin=0.0)
    dark, light = (preprocess_array(pen, PreprocessConfig(**config)) for pen in pens)
    assert dark.max() - light.max() == 80  # ink tone kept: the darker pen is brighter once inverted
    dark, light = (preprocess_array(pen, PreprocessConfig(**config, ink_tone="equalize")) for pen in pens)
    np.testing.assert_array_equal(dark, light)

    levels = (255 * rng.random(5000) ** 3).astype(np.uint8)  # a pale pen: most ink levels low once inverted
    out = equalized_ink(levels)
    order = np.argsort(levels, kind="stable")
    assert np.all(np.diff(out[order].astype(int)) >= 0)  # rank kept: texture stays
    assert all(len(np.unique(out[levels == v])) == 1 for v in np.unique(levels))  # equal levels stay equal
    low, high = INK_TONE_RANGE
    assert low <= out.min() and out.max() <= high
    # one distribution, uniform over the range, whatever the pen (a min-max stretch would keep the skew)
    assert np.allclose(np.quantile(out, [0.25, 0.5, 0.75]), low + (high - low) * np.array([0.25, 0.5, 0.75]), atol=4)


def test_fit_to_canvas_centres():
    out = fit_to_canvas(np.full((10, 10), 255, np.uint8), 20, 40)
    cols = np.flatnonzero(out.any(0))
    assert out.shape == (20, 40) and cols[0] == 10 and cols[-1] == 29


def ink_centre(image):
    return np.argwhere(image > 127).mean(axis=0)


def lopsided_signature(scale=1):
    """A heavy block on the left and a thin tail to the right: its centre of mass is far left of its box's centre."""
    page = np.full((300 * scale, 600 * scale), 240, np.uint8)
    page[100 * scale : 140 * scale, 100 * scale : 160 * scale] = 20
    page[118 * scale : 122 * scale, 160 * scale : 300 * scale] = 20
    return page


def test_centre_of_mass_canvas_centres_the_ink_by_its_mass_and_keeps_its_size():
    """sigver's canvas: the ink's centre of mass lands on the input's centre (the box's centre does under fit),
    and a signature written twice as large stays twice as large (fit scales both to the input)."""
    canvas = dict(placement="centre_of_mass", canvas_height=200, canvas_width=400)
    out = preprocess_array(lopsided_signature(), PreprocessConfig(height=100, width=200, **canvas))
    np.testing.assert_allclose(ink_centre(out), (49.5, 99.5), atol=1)
    fitted = preprocess_array(lopsided_signature(), PreprocessConfig(height=100, width=200, margin=0.0))
    assert abs(ink_centre(fitted)[1] - 99.5) > 20  # the box centred: the heavy block sits left of the middle

    def ink_width(image):
        return np.ptp(np.flatnonzero(image.max(axis=0) > 127)) + 1
    big = preprocess_array(lopsided_signature(scale=2), PreprocessConfig(height=100, width=200, **canvas))
    assert ink_width(out) == pytest.approx(100, abs=2)  # 200 source px on a canvas scaled by 1/2
    assert ink_width(big) == pytest.approx(2 * ink_width(out), abs=2)
    assert ink_width(fitted) == ink_width(preprocess_array(lopsided_signature(scale=2),
                                                           PreprocessConfig(height=100, width=200, margin=0.0)))


def test_centred_by_mass_keeps_the_ink_whole_near_the_edge_and_crops_only_what_cannot_fit():
    ink = np.zeros((10, 50), bool)
    ink[:, :5] = True  # the mass at the far left: centring it would push the right end off the canvas
    ink[4, 5:] = True
    placed = centred_by_mass(ink.astype(np.uint8) * 255, ink, (20, 60))
    assert placed.shape == (20, 60) and placed.sum() == ink.sum() * 255  # shifted, not cut
    assert np.flatnonzero(placed.any(axis=0))[-1] == 59  # pushed against the right edge as far as needed
    # rows: the mass centre, (50 x 4.5 + 45 x 4) / 95 = 4.3, moved to the canvas's middle row 10
    assert np.flatnonzero(placed.any(axis=1)).tolist() == list(range(6, 16))
    wide = (np.arange(320) % 250).astype(np.uint8).reshape(4, 80)  # wider than the canvas: its middle 60 columns
    np.testing.assert_array_equal(centred_by_mass(wide, wide > 0, (8, 60))[2:6], wide[:, 10:70])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="placement centre_of_mass needs canvas_height"):
        PreprocessConfig(placement="centre_of_mass")
    with pytest.raises(ValueError, match="apply to placement centre_of_mass only"):
        PreprocessConfig(canvas_height=100, canvas_width=200)
    with pytest.raises(ValueError, match="canvas 100000x100000 is over max_pixels"):
        PreprocessConfig(placement="centre_of_mass", canvas_height=100_000, canvas_width=100_000)
    with pytest.raises(ValueError, match="placement must be one of"):
        PreprocessConfig(placement="centre")
    with pytest.raises(ValueError, match="denoise"):
        PreprocessConfig(denoise="bilateral")
    with pytest.raises(ValueError, match="odd"):
        PreprocessConfig(denoise="gaussian", denoise_kernel=4)
