"""Embedding throughput: bare inference of the backbone on device tensors against the project's
``predict`` path (Trainer, cached test images through the loader, head, L2 normalisation).

    python -m benchmarks.infer [--backbone B] [--height H --width W] [--batch N] [--repeat N] [--no-channels-last]

Options left out take the device's defaults (``DEFAULTS``): EfficientNetV2-M at 1x192x384 on a GPU,
EfficientNetV2-B0 at 1x96x192 on a CPU. A batch that memory cannot hold stops with a message.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import timm
import torch

from benchmarks.common import apply_device_defaults, base_parser, emit, images_per_second, require_memory, sync
from sigverify.data.datamodule import SignatureDataModule, SyntheticConfig
from sigverify.data.manifest import read_manifest, write_manifest
from sigverify.data.preprocess import PreprocessConfig
from sigverify.data.splits import SplitConfig
from sigverify.models.embedding import laid_out
from sigverify.models.module import SignatureVerifier

DEFAULTS = {
    "cuda": dict(backbone="tf_efficientnetv2_m", height=192, width=384, batch=128, steps=60, workers=8, repeat=10),
    "cpu": dict(backbone="tf_efficientnetv2_b0", height=96, width=192, batch=128, steps=5, workers=1, repeat=1),
}


def inference_step(args, device):
    """``step(n)``: the bare backbone's forward pass on a device tensor of n images."""
    model = laid_out(timm.create_model(args.backbone, in_chans=1, num_classes=0).to(device).eval(), args.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    inputs: dict[int, torch.Tensor] = {}

    def step(n: int) -> None:
        if n not in inputs:
            inputs[n] = torch.randn(n, 1, args.height, args.width, device=device)
        with torch.inference_mode(), autocast:
            model(inputs[n])

    return step


class Timer(L.Callback):
    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 2:
            sync(pl_module.device)
            self.start, self.images = time.perf_counter(), 0
        if batch_idx >= 2:
            self.images += len(batch[0])

    def on_predict_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.end = time.perf_counter()


def repeated_manifest(args, tmp: Path) -> str:
    """The data set listed ``--repeat`` times under new signer names: enough images for the timed
    window to reach the steady state (CEDAR's test split is 0.5 s of work for an H200)."""
    source = SignatureDataModule(root=args.manifest, synthetic=SyntheticConfig(signers=80, genuine=12, forgeries=12),
                                 num_workers=args.workers, cache_dir=str(tmp / "cache")).manifest_path()
    records = read_manifest(source)
    copies = [replace(r, signer=f"{r.signer}-copy{i}") for i in range(args.repeat) for r in records]
    return str(write_manifest(copies, tmp / "repeated" / "manifest.csv"))


def predict_rate(args, device, tmp: Path) -> float:
    # Nearly every image is a test image, so the predict loader has enough batches to time.
    data = SignatureDataModule(root=repeated_manifest(args, tmp),
                               preprocess=PreprocessConfig(height=args.height, width=args.width),
                               split=SplitConfig(test_ratio=0.9, val_ratio=0.0), eval_batch_size=args.batch,
                               num_workers=args.workers, cache_dir=str(tmp / "cache"))
    data.prepare_data()
    model = SignatureVerifier(backbone=args.backbone, channels_last=args.channels_last)
    timer = Timer()
    trainer = L.Trainer(accelerator="auto", devices=1, precision="bf16-mixed" if device.type == "cuda" else "32-true",
                        logger=False, callbacks=[timer], enable_progress_bar=False, default_root_dir=tmp)
    trainer.predict(model, data, return_predictions=False)
    return timer.images / (timer.end - timer.start)


def main(argv=None) -> None:
    parser = base_parser()
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None, help="list the data set this many times (more images to time)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = apply_device_defaults(args, DEFAULTS, device)
    if chosen:
        print(chosen)
    tmp = Path(tempfile.mkdtemp(prefix="sigverify-bench-infer-"))
    step = inference_step(args, device)
    require_memory(step, args.batch, device, f"benchmarks.infer ({args.backbone}, 1x{args.height}x{args.width})")
    bare = images_per_second(step, args.batch, device, args.steps, warmup=3)
    print(f"bare inference: {bare:.1f} images/s")
    fit = predict_rate(args, device, tmp)
    print(f"sigverify predict path: {fit:.1f} images/s; ratio {fit / bare:.3f}")
    emit({"device": str(device), "backbone": args.backbone, "input_shape": [1, args.height, args.width],
          "batch_size": args.batch, "repeat": args.repeat, "channels_last": args.channels_last,
          "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
          "bare_img_s": round(bare, 1), "predict_img_s": round(fit, 1), "ratio": round(fit / bare, 3)})


if __name__ == "__main__":
    main()
