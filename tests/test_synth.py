"""The built-in synthetic signatures: format, determinism, and no shortcut through image statistics."""
import cv2
import numpy as np
import pytest

from sigverify.data.manifest import read_manifest, summarize
from sigverify.data.synth import synthesize_dataset, synthesize_signer
from sigverify.evaluation.metrics import eer


def test_manifest_format_and_counts(synth_manifest):
    records = read_manifest(synth_manifest)
    summary = summarize(records)
    assert summary["signers"] == 16 and summary["genuine"] == 96 and summary["forgery"] == 96
    image = cv2.imread(str(records[0].path), cv2.IMREAD_UNCHANGED)
    assert image.ndim == 2 and image.dtype == np.uint8
    assert np.median(image) > 200 and image.min() < 100  # dark ink on light paper


def test_deterministic_per_seed_and_signer(tmp_path):
    a = synthesize_signer(5, 2, 2, seed=1)
    b = synthesize_signer(5, 2, 2, seed=1)
    c = synthesize_signer(5, 2, 2, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1])
    path = synthesize_dataset(tmp_path / "w", signers=3, genuine=2, forgeries=1, seed=0, workers=2)
    assert len(read_manifest(path)) == 9


def test_genuine_samples_vary_and_signers_differ():
    imgs = [img for _, img, _ in synthesize_signer(1, 3, 0, seed=0)]
    other = synthesize_signer(2, 1, 0, seed=0)[0][1]
    assert len({img.shape for img in imgs}) > 1 or not np.array_equal(imgs[0], imgs[1])
    assert imgs[0].shape != other.shape or not np.array_equal(imgs[0], other)


def image_statistics(image: np.ndarray) -> list[float]:
    """What a shortcut would use: ink amount, ink darkness, bounding box."""
    threshold, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = image <= threshold
    ys, xs = np.nonzero(ink)
    return [ink.sum(), image[ink].mean(), np.ptp(xs), np.ptp(ys), ink.mean(), image.shape[0], image.shape[1]]


@pytest.mark.parametrize("style", ["classic", "skilled"])
def test_image_statistics_do_not_separate_genuine_from_forgeries(style):
    features, signers, genuine = [], [], []
    for s in range(30):
        for label, image, _ in synthesize_signer(s, 8, 8, seed=11, var=style):
            features.append(image_statistics(image))
            signers.append(s)
            genuine.append(label == "genuine")
    features, signers, genuine = np.array(features, float), np.array(signers), np.array(genuine)
    features = (features - features.mean(0)) / features.std(0)
    same, forged = [], []
    for s in range(30):
        g, f = features[(signers == s) & genuine], features[(signers == s) & ~genuine]
        diff_gg = np.linalg.norm(g[:, None] - g[None], axis=2)[np.triu_indices(len(g), 1)]
        diff_gf = np.linalg.norm(g[:, None] - f[None], axis=2).ravel()
        same.append(-diff_gg), forged.append(-diff_gf)
    baseline_eer, _ = eer(np.concatenate(same), np.concatenate(forged))
    assert baseline_eer >= 0.25, f"image statistics separate forgeries too well (EER {baseline_eer:.3f})"


def _shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - IoU of the two signatures' ink, each cropped and resized to one box (what the model sees)."""
    from sigverify.data.preprocess import PreprocessConfig, preprocess_array

    config = PreprocessConfig(height=64, width=128)
    ink_a, ink_b = preprocess_array(a, config) > 127, preprocess_array(b, config) > 127
    ink_a, ink_b = (cv2.dilate(x.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for x in (ink_a, ink_b))
    return 1 - (ink_a & ink_b).sum() / max(1, (ink_a | ink_b).sum())


def test_skilled_style_forgeries_follow_the_genuine_shape():
    """`skilled` forgeries imitate the genuine trajectory: closer to their signer's genuine signatures
    than `classic` ones (which look like another person's), yet not as close as the genuine ones are."""
    distances = {}
    for style in ("classic", "skilled"):
        gg, gf = [], []
        for s in range(12):
            images = synthesize_signer(s, 4, 4, seed=5, var=style)
            genuine = [img for label, img, _ in images if label == "genuine"]
            forged = [img for label, img, _ in images if label == "forgery"]
            gg += [_shape_distance(genuine[0], g) for g in genuine[1:]]
            gf += [_shape_distance(genuine[0], f) for f in forged]
        distances[style] = (np.mean(gg), np.mean(gf))
    assert distances["skilled"][1] < distances["classic"][1] - 0.05, distances
    assert distances["skilled"][0] < distances["skilled"][1], distances


def test_a_styles_generated_set_is_named_by_its_settings(tmp_path):
    """A retuned style must not reuse images drawn with its old settings: the data module's folder for it
    carries a hash of them (classic keeps its plain name)."""
    from dataclasses import replace

    from sigverify.data import synth
    from sigverify.data.datamodule import SignatureDataModule, SyntheticConfig

    def folder(style):
        dm = SignatureDataModule(synthetic=SyntheticConfig(signers=2, genuine=2, forgeries=1, style=style),
                                 cache_dir=str(tmp_path), num_workers=0)
        return dm.manifest_path().parent.name

    assert folder("classic") == "synthetic-n2-g2-f1-seed0"
    before = folder("skilled")
    assert before.startswith("synthetic-n2-g2-f1-seed0-skilled-")
    original = synth.STYLES["skilled"]
    try:
        synth.STYLES["skilled"] = replace(original, forgery_shape=original.forgery_shape + 0.01)
        assert folder("skilled") != before
    finally:
        synth.STYLES["skilled"] = original
