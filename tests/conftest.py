import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402

from sigverify.data.synth import synthesize_dataset  # noqa: E402


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory):
    """A small synthetic data set shared by the tests: 16 signers x (6 genuine + 6 forgeries)."""
    return synthesize_dataset(tmp_path_factory.mktemp("synth"), signers=16, genuine=6, forgeries=6, seed=3)


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SIGVERIFY_CACHE", str(folder))
    return folder


@pytest.fixture(autouse=True)
def working_directory_left_clean():
    """Tests write under tmp_path: a file left in the working directory (a stray split.json once got
    committed that way) fails the test that left it."""
    root = Path.cwd()
    before = set(os.listdir(root))
    yield
    left = set(os.listdir(root)) - before
    assert not left, f"test left {sorted(left)} in {root}"
