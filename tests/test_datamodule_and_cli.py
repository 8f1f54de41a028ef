import numpy as np
import pytest

from sigverify.cli import compose_config_args, main
from sigverify.config import compose
from sigverify.data.datamodule import SamplerConfig, SignatureDataModule
from sigverify.data.preprocess import PreprocessConfig


@pytest.fixture()
def datamodule(synth_manifest, tmp_path):
    dm = SignatureDataModule(root=str(synth_manifest.parent), cache_dir=str(tmp_path), num_workers=0,
                             preprocess=PreprocessConfig(height=32, width=64), sampler=SamplerConfig(p=4, batches_per_epoch=3))
    dm.setup("fit")
    return dm


def test_loaders_are_signer_disjoint_and_carry_labels(datamodule):
    train_signers = set(datamodule.dataset("train").signers)
    val_signers, test_signers = set(datamodule.dataset("val").signers), set(datamodule.dataset("test").signers)
    assert train_signers and val_signers and test_signers
    assert not (train_signers & val_signers) and not (train_signers & test_signers) and not (val_signers & test_signers)
    images, signers, genuine = next(iter(datamodule.train_dataloader()))
    assert images.shape == (4 * 6, 1, 32, 64) and images.dtype.is_floating_point is False
    assert set(signers.tolist()) <= train_signers and genuine.dtype == __import__("torch").bool


def test_augmentation_on_training_only(datamodule):
    val = datamodule.dataset("val")
    a, b = val[0][0], val[0][0]
    assert (a == b).all()  # evaluation images are never augmented
    np.testing.assert_array_equal(a[0].numpy(), np.asarray(datamodule.images[val.positions[0]]))
    train = datamodule.dataset("train", train=True)
    draws = [train[0][0] for _ in range(5)]
    assert any(not (d == draws[0]).all() for d in draws[1:])


def test_batched_fetch_equals_the_per_image_path(datamodule):
    import torch
    from torch.utils.data import default_collate

    val = datamodule.dataset("val")
    order = [3, 0, 5, 1]
    images, signers, genuine = val.__getitems__(order)
    ref_images, ref_signers, ref_genuine = default_collate([val[i] for i in order])
    assert torch.equal(images, ref_images) and torch.equal(signers, ref_signers) and torch.equal(genuine, ref_genuine)
    assert (images.dtype, signers.dtype, genuine.dtype) == (ref_images.dtype, ref_signers.dtype, ref_genuine.dtype)
    loaded = torch.cat([batch[0] for batch in datamodule.val_dataloader()])
    assert torch.equal(loaded, torch.from_numpy(np.asarray(datamodule.images[val.positions]))[:, None])
    train = datamodule.dataset("train", train=True)
    same_image_twice = train.__getitems__([0, 0, 0])[0]
    assert not (torch.equal(same_image_twice[0], same_image_twice[1]) and torch.equal(same_image_twice[1], same_image_twice[2]))


def test_eval_shards_cover_each_image_once(datamodule):
    full = datamodule.dataset("val").positions
    shards = [datamodule.dataset("val", shard=(3, r)).positions for r in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(full.tolist())


def test_config_composition_and_interpolation(tmp_path):
    text = compose("configs/lsc_plus.yaml", "configs/presets/cpu_tiny.yaml", overrides=["vars.name=x"])
    assert "default_root_dir: runs/x" in text and "dirpath: runs/x/checkpoints" in text
    assert "backbone: test_efficientnet" in text and "loss: lsc_plus" in text and "vars:" not in text
    cyc = tmp_path / "a.yaml"
    cyc.write_text("defaults: [a.yaml]\n")
    with pytest.raises(ValueError, match="cycle"):
        compose(cyc)
    args = compose_config_args(["fit", "--config", "configs/sct.yaml", "--model.lr", "1", "--vars.name", "y"])
    assert args[0] == "fit" and args[1] == "--config" and args[3:] == ["--model.lr", "1"]


def test_data_commands(tmp_path, capsys, cache_dir):
    with pytest.raises(SystemExit) as code:
        main(["data", "synth", "--out", str(tmp_path / "s"), "--signers", "3", "--genuine", "2", "--forgeries", "1"])
    assert code.value.code == 0
    with pytest.raises(SystemExit) as code:
        main(["data", "info", str(tmp_path / "s" / "manifest.csv"), "--check"])
    out = capsys.readouterr().out
    assert code.value.code == 0 and "signers: 3" in out and "images: 9 (6 genuine, 3 forgery)" in out
    (tmp_path / "s" / "s0001" / "g_01.png").write_bytes(b"broken")
    with pytest.raises(SystemExit) as code:
        main(["data", "info", str(tmp_path / "s" / "manifest.csv"), "--check"])
    out = capsys.readouterr().out
    assert code.value.code == 1 and "g_01.png: not a readable image" in out
    with pytest.raises(SystemExit) as code:
        main(["data", "prepare", str(tmp_path / "s" / "manifest.csv"), "--on-bad", "skip", "--cache-dir", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert code.value.code == 0 and "8 images" in out and "skipped:" in out


def test_data_preview_draws_a_real_training_batch(synth_manifest, tmp_path, capsys):
    from PIL import Image

    from sigverify.data.preview import data_module_from_config

    common = ["data", "preview", "--config", "configs/lsc_plus.yaml", "--config", "configs/presets/cpu_tiny.yaml",
              "--data.root", str(synth_manifest), "--data.cache_dir", str(tmp_path / "cache"), "--data.sampler.p=3"]
    with pytest.raises(SystemExit) as code:
        main([*common, "--out", str(tmp_path / "batch.png"), "--batch", "1"])
    assert code.value.code == 0 and "wrote" in capsys.readouterr().out
    picture = Image.open(tmp_path / "batch.png")
    assert picture.format == "PNG" and picture.height > 300  # three rows of eight labelled tiles
    data, seed = data_module_from_config(["configs/lsc_plus.yaml"], ["data.sampler.p=3"])
    assert data.sampler_config.p == 3 and seed == 42  # the composed config, typed as fit types it
    with pytest.raises(SystemExit) as code:
        main([*common, "--out", str(tmp_path / "b.png"), "--batch", "999"])
    assert code.value.code == 2 and "--batch must lie in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:
        main([*common, "--out", str(tmp_path / "b.png"), "--model.lr", "1"])
    assert code.value.code == 2 and "only --data.* overrides" in capsys.readouterr().err


def test_front_door_lists_every_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sigverify.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr
    for command in ("fit", "validate", "test", "predict", "data", "sweep", "export", "verify"):
        assert f"\n  {command} " in done.stdout, command
    assert "Lightning Trainer" not in done.stdout
    fit_help = subprocess.run([sys.executable, "-m", "sigverify.cli", "fit", "--help"], capture_output=True, text=True,
                              timeout=120)
    assert fit_help.returncode == 0 and "--trainer.max_epochs" in fit_help.stdout
    assert "args parameter is intended" not in fit_help.stderr
    wrong = subprocess.run([sys.executable, "-m", "sigverify.cli", "fitt"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "unknown command 'fitt'" in wrong.stderr


def test_command_help_is_plain_text_and_answers_without_loading_torch():
    """`sigverify COMMAND --help` prints no reST markup, and the commands on exported models parse their
    options before importing what they run (export's help once took 8.5 s loading torch)."""
    import subprocess
    import sys

    from sigverify.cli import ENTRY_POINTS

    probe = ("import runpy, sys; sys.argv = ['sigverify', sys.argv[1], '--help']\n"
             "try:\n    runpy.run_module('sigverify.cli', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)")
    for command in ENTRY_POINTS:
        if command == "data":  # its subcommands' help is checked through the parser it builds
            continue
        done = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, timeout=120)
        assert "usage: sigverify" in done.stdout, (command, done.stderr[-500:])
        assert "``" not in done.stdout and ":func:" not in done.stdout, command
        if command in ("export", "verify", "serve", "push", "app"):
            assert "NO TORCH" in done.stderr, command
