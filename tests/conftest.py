import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Hypothesis (under schemathesis) keeps its example database in ./.hypothesis unless told otherwise.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="sigverify-hypothesis-"))

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


# -- a model as a user gets one: `sigverify fit`, `test`, `predict`, then `export` ---------------------
SERVED_TINY = ["--model.backbone", "test_efficientnet", "--model.head_hidden", "[32]", "--model.embedding_dim", "32",
               "--data.preprocess.height", "32", "--data.preprocess.width", "64", "--data.synthetic.signers", "14",
               "--data.synthetic.genuine", "6", "--data.synthetic.forgeries", "4", "--data.num_workers", "0",
               "--data.sampler.p", "4", "--trainer.enable_progress_bar", "false",
               "--model.evaluation.protocol", "references", "--model.evaluation.also_protocols", "[pairs]",
               "--model.evaluation.n_references", "3", "--model.evaluation.bootstrap", "0"]


def cli(*args) -> int:
    """``sigverify ARGS`` in this process; its exit code."""
    from sigverify.cli import main

    try:
        main(list(args))
    except SystemExit as done:
        return done.code
    return 0


@pytest.fixture
def members_in_this_process(monkeypatch):
    """Sweep and benchmark members run their `sigverify` commands in this process rather than one fresh
    process each: the same commands without a start-up of several seconds per member (torch, Lightning).
    The sweep's end-to-end test runs its first sweep in real subprocesses, the path a user takes."""
    from sigverify import sweep

    def call(command: list[str], log, mode: str) -> dict | None:
        try:
            code = cli(*command)
        except Exception as err:  # what a member's process would die of
            code = f"{type(err).__name__}: {err}"
        return None if code in (0, None) else {"error": f"{command[0]} failed ({code}), log: {log}"}

    monkeypatch.setattr(sweep, "call", call)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    """(folder, run folder, best checkpoint, exported model folder) of a tiny run on synthetic signers."""
    tmp = tmp_path_factory.mktemp("served")
    common = ["--config", "configs/lsc_plus.yaml", "--vars.runs_root", str(tmp / "runs"), "--vars.name", "r",
              *SERVED_TINY, "--data.cache_dir", str(tmp / "cache")]
    assert cli("fit", *common, "--trainer.max_epochs", "2", "--data.sampler.batches_per_epoch", "3") == 0
    for stage in ("test", "predict"):
        assert cli(stage, *common, "--ckpt_path", "best") == 0
    run = tmp / "runs" / "r"
    ckpt = str(next((run / "checkpoints").glob("best-*.ckpt")))
    assert cli("export", "--ckpt", ckpt, "--out", str(tmp / "model")) == 0
    return tmp, run, ckpt, tmp / "model"


def signer_files(served_model, which: int = 0) -> tuple[list[str], list[str], list[int]]:
    """The image files of one test signer (the ``which``-th): genuine, forgeries, and their rows in the predict embeddings."""
    tmp, run, ckpt, model_dir = served_model
    dm = _test_data(ckpt)
    root = dm.manifest_path().parent
    positions = dm.positions("test")
    signer = sorted({dm.records[p].signer for p in positions})[which]
    rows = [i for i, p in enumerate(positions) if dm.records[p].signer == signer]
    genuine = [i for i in rows if dm.records[positions[i]].genuine]
    forged = [i for i in rows if not dm.records[positions[i]].genuine]
    path = lambda i: str(root / dm.records[positions[i]].path)  # noqa: E731
    return [path(i) for i in genuine], [path(i) for i in forged], genuine + forged


@functools.lru_cache(maxsize=None)
def _test_data(ckpt: str):
    """The data module of a checkpoint, set up once per checkpoint for the whole session."""
    from sigverify.models.checkpoint import TrainedCheckpoint

    dm = TrainedCheckpoint.read(ckpt).datamodule()
    dm.setup("test")
    return dm


@pytest.fixture(scope="session")
def serving_install(tmp_path_factory) -> Path:
    """A new environment with `pip install "sigverify[serve]"` alone (no torch), as the Docker image installs it:
    on Debian's /usr/bin/python3 where there is one (like the image's python:3.11, readable by any user; the
    project's own environment may live under /root), else this interpreter. Needs the package registry, as
    `make install` does. Returns the environment's folder."""
    base = tmp_path_factory.mktemp("serving-install")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable
    venv, source = base / "venv", base / "source"  # the source is a copy: the build writes into it
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    root = Path(__file__).resolve().parent.parent
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(root / name, source / name)
    shutil.copytree(root / "sigverify", source / "sigverify", ignore=shutil.ignore_patterns("__pycache__"))
    pinned = ["-c", str(source / "constraints.txt")] if os.environ.get("CONSTRAINTS", "constraints.txt") else []  # as make
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pinned, f"{source}[serve]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    return venv
