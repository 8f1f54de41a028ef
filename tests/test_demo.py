"""make demo's path at toy size: fit, test, and the summary it prints."""
from sigverify import demo


def test_demo_runs_end_to_end_and_summarises_the_report(tmp_path):
    tiny = ["--vars.runs_root", str(tmp_path / "runs"), "--data.cache_dir", str(tmp_path / "cache"),
            "--model.head_hidden", "[32]", "--data.preprocess.height", "32", "--data.preprocess.width", "64",
            "--data.synthetic.signers", "16", "--data.synthetic.genuine", "4", "--data.synthetic.forgeries", "4",
            "--data.num_workers", "0", "--data.sampler.p", "4", "--data.sampler.batches_per_epoch", "2",
            "--trainer.max_epochs", "1", "--config", "configs/trainer/csv_only.yaml",
            "--model.evaluation.n_references", "2"]  # 4 genuine signatures per signer: 2 references, 2 questioned
    report = demo.run(tiny)
    # pairs: the figure it prints; references: what export serves, so the exported card quotes test figures
    for protocol in ("pairs", "references"):
        assert (tmp_path / "runs" / "demo" / f"test-{protocol}" / "report.md").is_file()
    text = demo.summary(report)
    assert f"test signers: {report['n_signers']}" in text and "shortcut floor" in text and "EER (a posteriori)" in text
