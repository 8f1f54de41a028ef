"""Bad input: each case is handled correctly or gets a clear error naming the file and the problem."""
import numpy as np
import pytest
from PIL import Image

from sigverify.data.cache import prepare
from sigverify.data.errors import DataError, DataProblems
from sigverify.data.images import load_grayscale
from sigverify.data.manifest import Record, read_manifest, signer_warnings
from sigverify.data.preprocess import PreprocessConfig, preprocess_file


def signature_page(h=120, w=300, dark=30):
    page = np.full((h, w), 245, np.uint8)
    page[50:60, 40:260] = dark
    page[30:90, 140:146] = dark
    return page


@pytest.fixture()
def good_png(tmp_path):
    path = tmp_path / "good.png"
    Image.fromarray(signature_page()).save(path)
    return path


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"this is not an image at all", "not a readable image"),
    ],
)
def test_unreadable_files_name_file_and_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as err:
        load_grayscale(path)
    assert str(path) in str(err.value)


def test_truncated_png(tmp_path, good_png):
    data = good_png.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated|not a readable") as err:
        load_grayscale(path)
    assert "truncated.png" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_grayscale(tmp_path / "nope.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000), 255).save(path)
    with pytest.raises(DataError, match="too large"):
        load_grayscale(path, max_pixels=1_000_000)


def test_a_limit_above_pillows_warning_level_is_ours_and_one_above_its_refusal_is_refused(tmp_path, monkeypatch):
    """Between Pillow's warning level and its refusal (twice that), the image is within our limit and decodes;
    beyond Pillow's refusal, the message quotes our limit with the image's size above it; a limit Pillow cannot
    honour is refused when it is set, not met as a contradiction per image."""
    from sigverify.data.images import check_max_pixels

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow warns above 1,000 px and refuses above 2,000
    within, beyond = tmp_path / "within.png", tmp_path / "beyond.png"
    Image.new("L", (40, 40), 255).save(within)  # 1,600 px
    Image.new("L", (50, 50), 255).save(beyond)  # 2,500 px
    assert load_grayscale(within, max_pixels=1_800).shape == (40, 40)
    with pytest.raises(DataError, match=r"2500 px > 1800 px limit"):
        load_grayscale(beyond, max_pixels=1_800)
    with pytest.raises(ValueError, match="max_pixels must be between 1 and 2,000"):
        check_max_pixels(3_000)
    with pytest.raises(ValueError, match="max_pixels"):
        PreprocessConfig(max_pixels=3_000)


def test_blank_page(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (300, 120), 250).save(path)
    with pytest.raises(DataError, match="blank page") as err:
        preprocess_file(path, PreprocessConfig())
    assert "blank.png" in str(err.value)


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "LA", "P", "CMYK", "RGB"])
def test_other_image_modes_give_the_same_ink(tmp_path, mode):
    page = signature_page()
    if mode == "I;16":
        img = Image.fromarray(page.astype(np.uint16) * 257)
    elif mode in ("RGBA", "LA"):
        img = Image.fromarray(page).convert(mode)
        alpha = np.where(page < 128, 255, 0).astype(np.uint8)  # transparent paper
        img.putalpha(Image.fromarray(alpha))
    else:
        img = Image.fromarray(page).convert(mode)
    path = tmp_path / f"x.{'tif' if mode == 'CMYK' else 'png'}"
    img.save(path)
    reference = preprocess_file_from_array(tmp_path, page)
    got = preprocess_file(path, PreprocessConfig(height=64, width=128))
    assert np.mean(np.abs(got.astype(int) - reference.astype(int))) < 2.0


def preprocess_file_from_array(tmp_path, page):
    path = tmp_path / "ref.png"
    Image.fromarray(page).save(path)
    return preprocess_file(path, PreprocessConfig(height=64, width=128))


def test_manifest_unknown_label_and_empty_fields_listed_with_line_numbers(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,signer,label\na.png,1,genuine\nb.png,1,fake\nc.png,,genuine\n")
    with pytest.raises(DataProblems) as err:
        read_manifest(tmp_path / "manifest.csv")
    text = str(err.value)
    assert "manifest.csv:3" in text and "unknown label 'fake'" in text and "manifest.csv:4" in text


def test_manifest_missing_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,who\na.png,1\n")
    with pytest.raises(DataError, match="missing column"):
        read_manifest(tmp_path / "manifest.csv")


def test_signer_warnings_for_no_forgeries_and_single_genuine(tmp_path):
    records = [Record(tmp_path / "a", "1", "genuine"), Record(tmp_path / "b", "2", "genuine"),
               Record(tmp_path / "c", "2", "genuine"), Record(tmp_path / "d", "2", "forgery")]
    notes = signer_warnings(records)
    assert any("signer 1: 1 genuine" in n for n in notes)
    assert any("signer 1: no forgeries" in n for n in notes)
    assert not any(n.startswith("signer 2") for n in notes)


def test_scan_reports_every_bad_file_then_raises_or_skips(tmp_path, good_png):
    bad1, bad2 = tmp_path / "bad1.png", tmp_path / "bad2.png"
    bad1.write_bytes(b"")
    Image.new("L", (200, 100), 255).save(bad2)
    records = [Record(good_png, "1", "genuine"), Record(bad1, "1", "genuine"), Record(bad2, "1", "forgery"),
               Record(tmp_path / "missing.png", "1", "forgery")]
    config = PreprocessConfig(height=32, width=64)
    with pytest.raises(DataProblems) as err:
        prepare(records, config, tmp_path / "cache", on_bad="raise")
    assert len(err.value.problems) == 3
    assert not list((tmp_path / "cache").glob("*/index.json"))  # nothing written on failure
    prepared = prepare(records, config, tmp_path / "cache", on_bad="skip")
    assert [r.path for r in prepared.records] == [good_png]
    assert {p.path for p in prepared.skipped} == {str(bad1), str(bad2), str(tmp_path / "missing.png")}
    assert prepared.images.shape == (1, 32, 64)
