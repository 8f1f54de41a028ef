"""Ensembles (model.inference.ensemble): members' similarities averaged, checkpoints checked."""
import lightning as L
import numpy as np
import pytest
import torch

from sigverify.data.datamodule import SamplerConfig, SignatureDataModule, SyntheticConfig
from sigverify.data.preprocess import PreprocessConfig
from sigverify.data.splits import SplitConfig
from sigverify.evaluation.report import EvalConfig
from sigverify.models.inference import InferenceConfig
from sigverify.models.module import SignatureVerifier
from sigverify.training.callbacks import ReportWriter


def tiny_data(tmp_path, height=32, split_seed=42):
    return SignatureDataModule(synthetic=SyntheticConfig(signers=12, genuine=4, forgeries=4), cache_dir=str(tmp_path / "cache"),
                               preprocess=PreprocessConfig(height=height, width=2 * height),
                               sampler=SamplerConfig(p=4, batches_per_epoch=2), num_workers=0,
                               split=SplitConfig(seed=split_seed))


def tiny_trainer(tmp_path):
    return L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=[ReportWriter()])


def trained_checkpoint(tmp_path, seed: int, height=32, split_seed=42) -> str:
    L.seed_everything(seed)
    model = SignatureVerifier(backbone="test_efficientnet", head_hidden=[32], embedding_dim=16, warmup_epochs=0)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, tiny_data(tmp_path, height, split_seed))
    path = tmp_path / f"model-{seed}-{height}-split{split_seed}.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def embeddings(tmp_path, checkpoint: str, ensemble=(), features="embedding") -> np.ndarray:
    model = SignatureVerifier.load_from_checkpoint(checkpoint, inference=InferenceConfig(ensemble=list(ensemble),
                                                                                        features=features))
    batches = tiny_trainer(tmp_path).predict(model, tiny_data(tmp_path))
    return torch.cat([b["embedding"] for b in batches]).numpy()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ensemble")
    return tmp, trained_checkpoint(tmp, 0), trained_checkpoint(tmp, 1)


def test_ensemble_similarity_is_the_mean_of_the_members(two_models):
    tmp, a, b = two_models
    ea, eb, eab = embeddings(tmp, a), embeddings(tmp, b), embeddings(tmp, a, [b])
    assert eab.shape == (len(ea), 32)
    np.testing.assert_allclose(np.linalg.norm(eab, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(ea, eb, atol=1e-2)  # two different models, so the checks below can fail
    np.testing.assert_allclose(eab, np.concatenate([ea, eb], axis=1) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(eab @ eab.T, (ea @ ea.T + eb @ eb.T) / 2, atol=1e-5)
    # a model "ensembled" with itself scores as it does alone
    np.testing.assert_allclose(embeddings(tmp, a, [a]) @ embeddings(tmp, a, [a]).T, ea @ ea.T, atol=1e-5)


@pytest.mark.parametrize("features", ["backbone", "both"])
def test_members_are_scored_with_the_features_the_ensemble_scores(two_models, features):
    """A model scored with its backbone's pooled features (`inference.features`) joins members scored the same
    way: the ensemble's similarity is the mean of the members' similarities under those features."""
    tmp, a, b = two_models
    ea, eb, eab = (embeddings(tmp, a, features=features), embeddings(tmp, b, features=features),
                   embeddings(tmp, a, [b], features=features))
    assert ea.shape[1] != embeddings(tmp, a).shape[1] and eab.shape[1] == 2 * ea.shape[1]  # both members' features
    np.testing.assert_allclose(eab @ eab.T, (ea @ ea.T + eb @ eb.T) / 2, atol=1e-5)


def test_a_run_folder_stands_for_its_best_checkpoint(two_models, tmp_path):
    import shutil

    tmp, a, b = two_models
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(b, run / "checkpoints" / "best-epoch=000.ckpt")
    shutil.copy(a, run / "checkpoints" / "last.ckpt")  # not the best: must not be taken
    np.testing.assert_allclose(embeddings(tmp, a, [str(run)]), embeddings(tmp, a, [b]), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no best checkpoint in"):
        embeddings(tmp, a, [str(tmp_path)])


def test_ensemble_test_report_names_its_members(two_models, tmp_path):
    tmp, a, b = two_models
    model = SignatureVerifier.load_from_checkpoint(a, evaluation=EvalConfig(bootstrap=0),
                                                   inference=InferenceConfig(ensemble=[b]))
    trainer = tiny_trainer(tmp_path)
    trainer.test(model, tiny_data(tmp))
    assert model.test_reports["pairs"]["inference"]["ensemble"] == [b]
    assert (tmp_path / "test-pairs" / "report.json").is_file()


def test_bad_ensembles_are_refused_with_the_file_named(two_models, tmp_path):
    tmp, a, _ = two_models
    missing = str(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match="nope.ckpt: ensemble member checkpoint not found"):
        embeddings(tmp, a, [missing])
    other_size = trained_checkpoint(tmp_path, 2, height=48)
    with pytest.raises(ValueError, match=r"model-2-48-split42.ckpt: trained on images preprocessed otherwise than "
                                         r"this run's \(height: 48 vs 32, width: 96 vs 64\)"):
        embeddings(tmp, a, [other_size])
    model = SignatureVerifier(backbone="test_efficientnet", head_hidden=[32], inference=InferenceConfig(ensemble=[a]))
    with pytest.raises(ValueError, match="fit trains one model"):
        tiny_trainer(tmp_path).fit(model, tiny_data(tmp))


def test_a_member_that_saw_this_runs_test_signers_is_refused(two_models, tmp_path):
    tmp, a, _ = two_models
    other_split = trained_checkpoint(tmp_path, 3, split_seed=7)  # the same data, other signers in training
    stored = torch.load(other_split, weights_only=True)["signer_split"]
    this_run = torch.load(a, weights_only=True)["signer_split"]
    assert stored["data"] == this_run["data"] and stored["test"] != this_run["test"]
    with pytest.raises(ValueError, match=r"ensemble member .*split7.ckpt was trained or validated on \d+ of this run's"):
        embeddings(tmp, a, [other_split])
    model = SignatureVerifier.load_from_checkpoint(a, inference=InferenceConfig(ensemble=[other_split]),
                                               allow_seen_signers=True)
    with pytest.warns(UserWarning, match="allowed by model.allow_seen_signers"):
        tiny_trainer(tmp_path).predict(model, tiny_data(tmp))
    # The checkpoint itself, tested under a split whose test signers it trained on.
    with pytest.raises(ValueError, match="the checkpoint under evaluation was trained or validated on"):
        embeddings(tmp, other_split)
    legacy = tmp_path / "legacy.ckpt"
    checkpoint = torch.load(other_split, weights_only=True)
    del checkpoint["signer_split"]
    torch.save(checkpoint, legacy)
    with pytest.raises(ValueError, match="does not record which signers it was trained on"):
        embeddings(tmp, a, [str(legacy)])
