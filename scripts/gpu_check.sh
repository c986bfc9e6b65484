#!/usr/bin/env bash
# The one prepared check for a lent GPU (CI has none). From the repository root:
#     OUT=/tmp/gpu bash scripts/gpu_check.sh [ddpm-steps] [ddpm-seconds] 2>&1 | tee /tmp/gpu/log.txt
# 1. every model file trains 30 steps and samples on CUDA (bf16 autocast), on mnist5k
# 2. torchrun with one process (NCCL, DDP wrapper)
# 3. DDPM at GPU size (ch 64, batch 128): training and sampling throughput, FID against mnist5k:test, bits/dim
# 4. the same with --compile, if time is left
# Logs and pictures (no checkpoints) go to $OUT/gpu.tgz.
set -u
export PYTHONUNBUFFERED=1 GENMODELS_QUIET=1
OUT=${OUT:-runs/gpu-out}; DDPM_STEPS=${1:-20000}; SECONDS_DDPM=${2:-240}
mkdir -p "$OUT" runs/gpu
T0=$(date +%s)
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"

say "1. every file on CUDA"
for f in vae flow gan ebm score cfg ddpm; do
  if timeout 120 $py $f.py train --device cuda --steps 30 --out runs/gpu/$f >runs/gpu/$f.log 2>&1; then
    if [ "$f" = cfg ]; then extra="--label 3"; else extra=""; fi
    if timeout 120 $py $f.py sample --ckpt runs/gpu/$f/ckpt.pt --device cuda --n 16 $extra \
         --out runs/gpu/$f-samples.png >>runs/gpu/$f.log 2>&1; then say "$f: train + sample OK"
    else say "$f: SAMPLE FAILED"; tail -5 runs/gpu/$f.log; fi
  else say "$f: TRAIN FAILED"; tail -5 runs/gpu/$f.log; fi
done

say "2. torchrun, one process, NCCL"
timeout 120 torchrun --standalone --nproc_per_node=1 ddpm.py train --device cuda --steps 20 --out runs/gpu/ddp \
  >runs/gpu/ddp.log 2>&1 && say "torchrun OK" || { say "torchrun FAILED"; tail -5 runs/gpu/ddp.log; }

say "3. DDPM at GPU size, $DDPM_STEPS steps (SIGINT after $SECONDS_DDPM s keeps a checkpoint)"
timeout -s INT $SECONDS_DDPM $py ddpm.py train --device cuda --ch 64 --batch-size 128 --lr 1e-3 --warmup 200 \
  --ema-decay 0.999 --steps "$DDPM_STEPS" --ckpt-every 1000 --out runs/gpu/ddpm-big >runs/gpu/ddpm-big.log 2>&1
say "train exit $?"
$py - <<'PY'
import json
rows = [json.loads(l) for l in open("runs/gpu/ddpm-big/metrics.jsonl") if '"loss"' in l]
a, b = rows[len(rows) // 5], rows[-1]
print(f"DDPM ch64 bs128 bf16: {b['step'] + 1} steps in {b['sec']:.0f} s, "
      f"{(b['step'] - a['step']) * 128 / (b['sec'] - a['sec']):.0f} img/s training, last loss {b['loss']:.4f}")
PY
for spec in "dpm++2m 20 5000" "ddim 50 5000" "ddpm 1000 2000"; do
  set -- $spec
  s0=$(ms)
  $py ddpm.py sample --ckpt runs/gpu/ddpm-big/ckpt.pt --device cuda --sampler $1 --steps $2 --n $3 \
    --batch-size 1000 --out runs/gpu/ddpm-big/$1-$2.npz >/dev/null 2>>runs/gpu/ddpm-big.log
  say "sample $1 $2: $3 samples in $(( $(ms) - s0 )) ms (incl. start-up)"
  $py fid.py score runs/gpu/ddpm-big/$1-$2.npz mnist5k:test 2>&1 | tail -4
done
$py ddpm.py sample --ckpt runs/gpu/ddpm-big/ckpt.pt --device cuda --n 64 --out runs/gpu/ddpm-big.png >/dev/null 2>&1
say "variational bound"
timeout 90 $py ddpm.py nll --ckpt runs/gpu/ddpm-big/ckpt.pt --device cuda 2>&1 | tail -2

left=$(( 520 - ($(date +%s) - T0) ))
say "4. --compile ($left s left)"
[ $left -gt 60 ] && timeout $left $py ddpm.py train --device cuda --compile --ch 64 --batch-size 128 --steps 400 \
  --out runs/gpu/ddpm-compile >runs/gpu/ddpm-compile.log 2>&1 && $py - <<'PY'
import json
rows = [json.loads(l) for l in open("runs/gpu/ddpm-compile/metrics.jsonl") if '"loss"' in l]
a, b = rows[len(rows) // 2], rows[-1]
print(f"--compile: {(b['step'] - a['step']) * 128 / (b['sec'] - a['sec']):.0f} img/s training after warm-up")
PY

tar czf "$OUT/gpu.tgz" --exclude='*.pt' --exclude='*.npz' runs/gpu
say done
