"""Training augmentation: stroke width scaled relative to the image's own strokes, at every input size."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from sigverify.config import compose
from sigverify.data.augment import AugmentConfig, StrokeWidth, build_train_transform, scale_stroke_width
from sigverify.data.manifest import read_manifest
from sigverify.data.preprocess import PreprocessConfig, preprocess_file


def preset_sizes() -> set[tuple[int, int]]:
    """The model input size of the base experiment and of every preset."""
    sizes = set()
    for preset in [None, *sorted(Path("configs/presets").glob("*.yaml"))]:
        files = ["configs/lsc_plus.yaml"] + ([str(preset)] if preset else [])
        pre = yaml.safe_load(compose(*files))["data"]["preprocess"]
        sizes.add((pre["height"], pre["width"]))
    return sizes


SIZES = sorted(preset_sizes())


@pytest.fixture(scope="module")
def pages(synth_manifest):
    return [r.path for r in read_manifest(synth_manifest)[::7]]  # genuine and forged, several signers


def ink(image) -> float:
    return float(np.asarray(image, np.float64).sum())


@pytest.mark.parametrize("size", SIZES)
def test_thinning_keeps_half_the_ink_and_thickening_at_most_doubles_it(pages, size):
    config = AugmentConfig()
    for path in pages:
        image = preprocess_file(path, PreprocessConfig(height=size[0], width=size[1]))
        thin = scale_stroke_width(image, config.stroke_scale_min)
        thick = scale_stroke_width(image, config.stroke_scale_max)
        assert 0.5 <= ink(thin) / ink(image) <= 0.7, (path, size)  # 0.6 asked for
        assert 1.45 <= ink(thick) / ink(image) <= 2.0, (path, size)  # 1.6 asked for


def test_wide_strokes_get_narrower_not_only_fainter(pages):
    # At 192x384 the strokes are several pixels wide: thinning must take pixels off their edges.
    image = preprocess_file(pages[0], PreprocessConfig(height=192, width=384))
    thin, thick = scale_stroke_width(image, 0.6), scale_stroke_width(image, 1.6)
    assert (thin > 127).sum() < 0.8 * (image > 127).sum()
    assert (thick > 127).sum() > 1.3 * (image > 127).sum()
    assert thin.max() == 255  # stroke centres keep full ink


@pytest.mark.parametrize("size", SIZES)
def test_the_training_pipeline_never_erases_or_blots_a_signature(pages, size):
    transform = build_train_transform(AugmentConfig(affine_p=0.0, ink_intensity_p=0.0, stroke_width_p=1.0))
    transform.set_random_seed(0)
    ratios = []
    for path in pages:
        image = preprocess_file(path, PreprocessConfig(height=size[0], width=size[1]))
        for _ in range(10):
            ratios.append(ink(transform(image=image)["image"]) / ink(image))
    assert 0.55 <= min(ratios) and max(ratios) <= 1.7
    assert min(ratios) < 0.8 and max(ratios) > 1.3  # both directions are drawn


def test_blank_and_unit_factor_are_left_alone():
    blank = np.zeros((8, 16), np.uint8)
    assert scale_stroke_width(blank, 1.5) is blank
    image = np.zeros((8, 16), np.uint8)
    image[4, 2:12] = 255
    assert scale_stroke_width(image, 1.0) is image


def test_stroke_scale_range_is_checked():
    with pytest.raises(ValueError, match="stroke_scale"):
        AugmentConfig(stroke_scale_min=0.3)
    with pytest.raises(ValueError, match="stroke_scale"):
        AugmentConfig(stroke_scale_max=3)
    assert isinstance(build_train_transform(AugmentConfig()).transforms[1], StrokeWidth)
