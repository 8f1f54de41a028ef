"""Training throughput: (a) a bare timm step on random tensors already on the device, against
(b) the project's real ``fit`` path (Trainer, data module with the preprocessing cache, PKFM
sampling, augmentation in loader workers, LSC+ with its diagnostics, CSV logging), same device,
backbone, input shape, batch size and precision, in one process.

    python -m benchmarks.train [--backbone B] [--height H --width W] [--p P --k K --f F --m M]
        [--freeze-stages N] [--steps N] [--warmup N] [--workers N] [--manifest M] [--compile] [--no-channels-last]

Options left out take the device's defaults (``DEFAULTS``): the write-up's EfficientNetV2-M at
1x192x384, batch 128, on a GPU; EfficientNetV2-B0 at 1x96x192, batch 48, on a CPU, which two cores
finish in a couple of minutes. ``--freeze-stages N`` freezes the stem and the first N block stages in both
(as ``model.freeze_stages`` does with its default batch norms, ``adapt``: no gradients reach them), the CPU
presets' way of affording ImageNet backbones. A batch that memory cannot hold stops with a message, not a kill.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
import timm
import torch

from benchmarks.common import apply_device_defaults, base_parser, emit, images_per_second, require_memory, sync
from sigverify.data.datamodule import SamplerConfig, SignatureDataModule, SyntheticConfig
from sigverify.data.preprocess import PreprocessConfig
from sigverify.models.embedding import freeze_stages, laid_out
from sigverify.models.module import SignatureVerifier
from sigverify.training.callbacks import DistributionMonitor

DEFAULTS = {
    "cuda": dict(backbone="tf_efficientnetv2_m", height=192, width=384, p=16, k=4, f=2, m=2, steps=40, warmup=10,
                 workers=8),
    "cpu": dict(backbone="tf_efficientnetv2_b0", height=96, width=192, p=8, k=2, f=2, m=2, steps=10, warmup=3,
                workers=1),
}


def bare_network(args, device) -> torch.nn.Module:
    """The bare timm backbone on the device, its first ``args.freeze_stages`` stages frozen."""
    model = timm.create_model(args.backbone, in_chans=1, num_classes=0).to(device)
    freeze_stages(model, args.freeze_stages)  # batch norms adapt, as model.freeze_stages's default
    return laid_out(model, args.channels_last)


def bare_step(args, device):
    """``step(n)``: forward, a simple loss, backward and AdamW step of the bare timm backbone on a
    device tensor of n images."""
    model = bare_network(args, device)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    inputs: dict[int, torch.Tensor] = {}

    def step(n: int) -> None:
        if n not in inputs:
            inputs[n] = torch.randn(n, 1, args.height, args.width, device=device)
        with autocast:
            loss = step_model(inputs[n]).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class StepTimer(L.Callback):
    """Wall time over the measured steps, and the share spent waiting for batches."""

    def __init__(self, warmup: int):
        self.warmup, self.wait, self.last_end, self.start, self.end = warmup, 0.0, None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self.start = now = time.perf_counter()
        elif batch_idx > self.warmup and self.last_end is not None:
            self.wait += now - self.last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.end = time.perf_counter()


def fit_rate(args, device, batch_size: int, root: str | None, tmp: Path) -> tuple[float, float]:
    data = SignatureDataModule(root=root, synthetic=SyntheticConfig(signers=60, genuine=12, forgeries=12),
                               preprocess=PreprocessConfig(height=args.height, width=args.width),
                               sampler=SamplerConfig(args.p, args.k, args.f, args.m, batches_per_epoch=args.warmup + args.steps),
                               num_workers=args.workers, cache_dir=str(tmp / "cache"))
    data.prepare_data()  # the cache is built once, before anything is timed
    model = SignatureVerifier(backbone=args.backbone, loss="lsc_plus", compile=args.compile, channels_last=args.channels_last,
                              finite_check_every=args.finite_check_every, freeze_stages=args.freeze_stages)
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, accelerator="auto", devices=1,
                        precision="bf16-mixed" if device.type == "cuda" else "32-true",
                        logger=L.pytorch.loggers.CSVLogger(tmp / "run"), callbacks=[timer, DistributionMonitor()],
                        enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False,
                        log_every_n_steps=10, num_sanity_val_steps=0)
    trainer.fit(model, data)
    elapsed = timer.end - timer.start
    return args.steps * batch_size / elapsed, timer.wait / elapsed


def main(argv=None) -> None:
    parser = base_parser()
    for name in ("p", "k", "f", "m", "warmup"):
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--freeze-stages", type=int, default=0, help="freeze the stem and the first N block stages")
    parser.add_argument("--finite-check-every", type=int, default=1)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = apply_device_defaults(args, DEFAULTS, device)
    if chosen:
        print(chosen)
    batch = args.p * (args.k + args.f + args.m)
    tmp = Path(tempfile.mkdtemp(prefix="sigverify-bench-train-"))
    step = bare_step(args, device)
    require_memory(step, batch, device, f"benchmarks.train ({args.backbone}, 1x{args.height}x{args.width})")
    bare = images_per_second(step, batch, device, args.steps, args.warmup)
    print(f"bare timm step: {bare:.1f} images/s")
    fit, wait = fit_rate(args, device, batch, args.manifest, tmp)
    print(f"sigverify fit path: {fit:.1f} images/s ({100 * wait:.0f} % of the time waiting for batches)")
    print(f"ratio fit/bare: {fit / bare:.3f}")
    emit({"device": str(device), "backbone": args.backbone, "input_shape": [1, args.height, args.width],
          "batch_size": batch, "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
          "compile": args.compile, "channels_last": args.channels_last, "freeze_stages": args.freeze_stages, "workers": args.workers,
          "finite_check_every": args.finite_check_every,
          "bare_img_s": round(bare, 1), "fit_img_s": round(fit, 1), "ratio": round(fit / bare, 3),
          "data_wait_fraction": round(wait, 3)})


if __name__ == "__main__":
    main()
