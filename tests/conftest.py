import os

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
