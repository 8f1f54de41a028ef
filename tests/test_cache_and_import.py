import os
import time

import numpy as np
import pytest
from PIL import Image

from sigverify.data import cache as cache_module
from sigverify.data.cache import prepare
from sigverify.data.importers import import_cedar, import_folders
from sigverify.data.manifest import read_manifest
from sigverify.data.preprocess import PreprocessConfig


def test_cache_is_reused_and_invalidated(synth_manifest, tmp_path, monkeypatch):
    records = read_manifest(synth_manifest)[:20]
    config = PreprocessConfig(height=32, width=64)
    first = prepare(records, config, tmp_path)
    assert not first.reused and first.images.shape == (20, 32, 64)

    calls = []
    real = cache_module._preprocess_all
    monkeypatch.setattr(cache_module, "_preprocess_all", lambda *a: calls.append(1) or real(*a))
    again = prepare(records, config, tmp_path)
    assert again.reused and again.path == first.path and not calls  # nothing decoded again
    np.testing.assert_array_equal(again.images, first.images)

    other_settings = prepare(records, PreprocessConfig(height=32, width=64, min_speck_area=4), tmp_path)
    assert not other_settings.reused and other_settings.path != first.path

    # Change one source file: a new cache, whose image for that file differs.
    target = records[0].path
    Image.fromarray(np.asarray(Image.open(records[1].path))).save(target)
    stamp = time.time() + 5
    os.utime(target, (stamp, stamp))
    changed = prepare(records, config, tmp_path)
    assert not changed.reused and changed.path != first.path
    np.testing.assert_array_equal(changed.images[0], changed.images[1])
    assert len(calls) == 2


def test_parallel_build_equals_serial(synth_manifest, tmp_path):
    records = read_manifest(synth_manifest)[:80]
    config = PreprocessConfig(height=32, width=64)
    serial = cache_module._preprocess_all(records, config, 0)[0]
    parallel = cache_module._preprocess_all(records, config, 2)[0]
    np.testing.assert_array_equal(np.stack(serial), np.stack(parallel))


def _png(path, value=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    page = np.full((40, 80), 240, np.uint8)
    page[15:25, 10:70] = value
    Image.fromarray(page).save(path)


def test_import_cedar_layout(tmp_path):
    for s in (1, 2):
        for n in (1, 2, 3):
            _png(tmp_path / "full_org" / f"original_{s}_{n}.png")
            _png(tmp_path / "full_forg" / f"forgeries_{s}_{n}.png")
    (tmp_path / "full_org" / "Thumbs.db").write_bytes(b"junk")
    records = read_manifest(import_cedar(tmp_path))
    assert len(records) == 12
    assert {(r.signer, r.label) for r in records} == {(s, lab) for s in "12" for lab in ("genuine", "forgery")}
    assert all(r.path.is_file() for r in records)
    one = [r for r in records if r.path.name == "forgeries_2_3.png"][0]
    assert (one.signer, one.label, one.index) == ("2", "forgery", 3)


def test_import_cedar_rejects_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="full_org"):
        import_cedar(tmp_path)


def test_import_folder_per_signer(tmp_path):
    for signer in ("alice", "bob"):
        for name in ("g1.png", "g2.jpg", "forged_1.png", "FORG_2.png"):
            _png(tmp_path / signer / name) if name.endswith("png") else Image.new("L", (20, 20), 0).save(tmp_path / signer / name)
        (tmp_path / signer / "notes.txt").write_text("not an image")
    records = read_manifest(import_folders(tmp_path, forgery_pattern=r"(?i)forg"))
    assert len(records) == 8
    labels = {(r.signer, r.path.name): r.label for r in records}
    assert labels[("alice", "forged_1.png")] == "forgery" and labels[("bob", "FORG_2.png")] == "forgery"
    assert labels[("alice", "g2.jpg")] == "genuine"


def test_manifest_round_trip_inside_and_outside_its_folder(synth_manifest, tmp_path):
    from dataclasses import replace

    from sigverify.data.manifest import write_manifest

    records = read_manifest(synth_manifest)
    inside = write_manifest(records, synth_manifest.parent / "copy.csv")
    assert read_manifest(inside) == records
    assert not any(line.startswith("/") for line in inside.read_text().splitlines())  # relative: the folder can move
    renamed = [replace(r, signer=f"{r.signer}-b") for r in records]
    outside = write_manifest(renamed, tmp_path / "elsewhere" / "manifest.csv")
    assert read_manifest(outside) == renamed
