"""Data pipeline throughput: preprocessing (decode -> Otsu -> crop -> resize) and the training loader
(cache -> PKFM batches -> augmentation -> uint8 tensors) per worker, at the default input size.

    python -m benchmarks.data [--manifest M] [--height 192 --width 384] [--workers 1 2] [--batches 60]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit
from sigverify.data.datamodule import SamplerConfig, SignatureDataModule
from sigverify.data.manifest import read_manifest
from sigverify.data.preprocess import PreprocessConfig, preprocess_file
from sigverify.data.synth import synthesize_dataset


def preprocess_rate(manifest: Path, config: PreprocessConfig, limit: int = 400) -> float:
    records = read_manifest(manifest)[:limit]
    start = time.perf_counter()
    for r in records:
        preprocess_file(r.path, config)
    return len(records) / (time.perf_counter() - start)


def loader_rate(manifest: Path, config: PreprocessConfig, workers: int, batches: int, cache: str) -> float:
    dm = SignatureDataModule(root=str(manifest), preprocess=config, cache_dir=cache, num_workers=workers,
                             sampler=SamplerConfig(p=8, k=2, f=2, m=2, batches_per_epoch=batches + 5))
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    for _ in range(5):  # workers start, first batches
        next(loader)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(loader)[0])
    return images / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default=None, help="default: a generated synthetic set")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="sigverify-bench-")
    manifest = Path(args.manifest) if args.manifest else synthesize_dataset(Path(tmp) / "synth", 40, 12, 12, seed=0)
    config = PreprocessConfig(height=args.height, width=args.width)
    pre = preprocess_rate(manifest, config)
    print(f"preprocessing: {pre:.0f} images/s (one process, decode included)")
    per_worker = {}
    for w in args.workers:
        rate = loader_rate(manifest, config, w, args.batches, str(Path(tmp) / "cache"))
        per_worker[w] = rate
        print(f"training loader, {w} worker(s): {rate:.0f} augmented images/s ({rate / w:.0f} per worker)")
    one = per_worker.get(1, next(iter(per_worker.values())))
    emit({"input_shape": [1, args.height, args.width], "preprocess_img_s": round(pre, 1),
          "loader_img_s": {str(w): round(r, 1) for w, r in per_worker.items()},
          "loader_img_s_per_worker": round(one, 1)})


if __name__ == "__main__":
    main()
