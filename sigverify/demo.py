"""``make demo``: the main job on the built-in default, end to end on a CPU.

1. generates the synthetic signature set (first run only) and prepares its cache;
2. trains LSC+ with the CPU-tiny preset (configs/lsc_plus.yaml + configs/presets/cpu_tiny.yaml), a line
   per epoch;
3. tests the best checkpoint on the held-out synthetic signers, with the threshold fixed on the
   validation signers, and prints EER / AUC and the error rates at that threshold;
4. copies a few images of one test signer to ``runs/demo/examples/`` for the next steps (export, verify,
   the service), which it prints.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from sigverify.cli import main as sigverify

# Tested under both protocols: pairs is the figure it prints; references is what export serves, so the exported
# model's card and case reports quote the test signers' figures (Cllr included).
CONFIGS = ["--config", "configs/lsc_plus.yaml", "--config", "configs/presets/cpu_tiny.yaml", "--vars.name", "demo",
           "--model.evaluation.also_protocols", "[references]"]
EXAMPLE_REFERENCES = 5  # the preset's model.evaluation.n_references: the count export validates by default


def run(extra: list[str] | None = None) -> dict:
    extra = extra or []
    start = time.perf_counter()
    common = [*CONFIGS, "--trainer.enable_progress_bar", "false", *extra]
    sigverify(["fit", *common])
    sigverify(["test", *common, "--ckpt_path", "best"])
    run_dir = Path(next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--vars.runs_root"), "runs")) / "demo"
    report = json.loads((run_dir / "test-pairs" / "report.json").read_text())
    examples = write_examples(run_dir)
    report["examples"] = str(examples) if examples else None
    report["wall_s"] = time.perf_counter() - start
    return report


def write_examples(run_dir: Path) -> Path | None:
    """Copies of one test signer's images (never seen in training): ``reference-1..5.png`` (genuine),
    ``questioned-genuine.png`` (another genuine one) and ``questioned-forgery.png`` (a skilled forgery);
    None when no test signer has that many (a data set smaller than the built-in one)."""
    from sigverify.data.manifest import signer_order
    from sigverify.models.checkpoint import TrainedCheckpoint

    datamodule = TrainedCheckpoint.read(run_dir).datamodule()
    datamodule.setup("test")
    by_signer: dict[str, tuple[list, list]] = {}
    for record in datamodule.records:
        if record.signer in datamodule.split["test"]:
            by_signer.setdefault(record.signer, ([], []))[0 if record.genuine else 1].append(record.path)
    usable = [s for s, (genuine, forged) in by_signer.items() if len(genuine) > EXAMPLE_REFERENCES and forged]
    if not usable:
        return None
    genuine, forged = by_signer[sorted(usable, key=signer_order)[0]]
    out = run_dir / "examples"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for i, path in enumerate(genuine[:EXAMPLE_REFERENCES], 1):
        shutil.copyfile(path, out / f"reference-{i}.png")
    shutil.copyfile(genuine[EXAMPLE_REFERENCES], out / "questioned-genuine.png")
    shutil.copyfile(forged[0], out / "questioned-forgery.png")
    return out


def summary(report: dict) -> str:
    ci = report.get("eer_ci95") or [float("nan")] * 2
    examples = report.get("examples")
    lines = [
        "",
        "sigverify demo: LSC+ on the built-in synthetic signatures (CPU-tiny preset)",
        f"  test signers: {report['n_signers']} (never seen in training); {report['n_genuine']} genuine and "
        f"{report['n_forgery']} skilled-forgery pairs",
        f"  EER (a posteriori)  {100 * report['eer']:.1f} %  (95 % CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f} %)",
        f"  AUC                 {report['auc']:.3f}",
        f"  at the threshold {report['threshold']:.3f} fixed on validation signers: FRR {100 * report['frr']:.1f} %, "
        f"FAR skilled {100 * report['far_skilled']:.1f} %, FAR random {100 * (report['far_random'] or 0):.1f} %",
        f"  shortcut floor: image statistics alone reach EER {100 * report['image_statistics_eer']:.1f} % "
        "under the same protocol",
        f"  wall time {report['wall_s'] / 60:.1f} min; run folder runs/demo (report, plots, checkpoints, logs)",
    ]
    if examples:
        lines.append(f"  a test signer's images for the next steps: {examples}/ (reference-1..{EXAMPLE_REFERENCES}.png, "
                     "questioned-genuine.png, questioned-forgery.png)")
    return "\n".join([*lines, "next: sigverify export --ckpt runs/demo --out models/demo   (then verify and serve: "
                                "README.md)"])


if __name__ == "__main__":
    print(summary(run(sys.argv[1:])))
