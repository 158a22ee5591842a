#!/usr/bin/env bash
# One prepared GPU check (issue 21, item 5): correctness of the Triton MT kernel and the
# compiled steps on CUDA, then the CUDA benchmarks. Run from the repository root on a fresh
# CUDA machine that has PyTorch + Triton (+ torchvision, timm); nothing is downloaded.
#
#   OUT=/some/dir [OFFICIAL_DCGS=/path/to/ANN-to-SNN-DCGS] bash benchmarks/gpu_check.sh
#
# Every step has its own timeout and a failing step does not stop the others; each writes
# its log (and JSON where it has one) to $OUT. Budget: about 6 minutes in all.
# OFFICIAL_DCGS (default: ./official_dcgs if it exists) is a checkout of
# github.com/h-z-h-cell/ANN-to-SNN-DCGS that you copied there; without it the official
# columns are skipped.
set -x
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
OFFICIAL_DCGS=${OFFICIAL_DCGS:-$PWD/official_dcgs}
export SNNBENCH_FUSE=1 PYTHONUNBUFFERED=1
START=$(date +%s)
step() {  # step NAME SECONDS COMMAND... : run with a timeout, log to $OUT/NAME.log, never abort
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout --kill-after=10 "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$OUT/steps.txt"
  tail -n 40 "$OUT/$name.log"
}

step env 15 bash -c "nvidia-smi; $PY -c 'import torch, triton, torchvision; print(torch.__version__, torch.version.cuda, triton.__version__, torchvision.__version__, torch.cuda.get_device_name())'; nproc; free -g"

# snnbench itself: editable install without dependencies (mlflow, ray, pycocotools are not
# needed by the kernels and benchmarks). Fallback when setuptools is missing: a folder that
# maps the package layout (bench/ is snnbench) plus a dist-info with the entry points.
step install 60 $PY -m pip install --no-deps --no-build-isolation -e .
if ! $PY -c "import snnbench.methods.dcgs, snnbench.plugins as p; p.create_method('dcgs', {})" >> "$OUT/install.log" 2>&1; then
  SHIM=$(mktemp -d)
  mkdir -p "$SHIM/snnbench"
  for f in bench/*; do ln -s "$PWD/$f" "$SHIM/snnbench/$(basename "$f")"; done
  for pkg in methods tasks leaderboard; do ln -s "$PWD/$pkg" "$SHIM/snnbench/$pkg"; done
  mkdir -p "$SHIM/snnbench-0.0.0.dist-info"
  printf 'Metadata-Version: 2.1\nName: snnbench\nVersion: 0.0.0\n' > "$SHIM/snnbench-0.0.0.dist-info/METADATA"
  $PY - "$SHIM/snnbench-0.0.0.dist-info/entry_points.txt" <<'PYEOF'
import sys, tomllib
eps = tomllib.load(open("pyproject.toml", "rb"))["project"].get("entry-points", {})
with open(sys.argv[1], "w") as f:
    for group, entries in eps.items():
        f.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n")
PYEOF
  export PYTHONPATH="$SHIM:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  echo "using the import shim $SHIM" | tee -a "$OUT/steps.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the benchmarks package

# 1. correctness on CUDA: Triton kernel and compiled step vs the PyTorch eager step, bit for bit
step kernel_check 60 $PY -m benchmarks.gpu_kernel_check
# 2. MT neuron step: PyTorch eager vs torch.compile vs Triton vs a conv, two frame sizes
step mt_kernel_small 30 $PY -m benchmarks.bench_mt_kernel --device cuda --repeats 5 --out "$OUT/mt_kernel_small.json"
step mt_kernel_large 30 $PY -m benchmarks.bench_mt_kernel --device cuda --repeats 5 --shape 64,64,56,56 --out "$OUT/mt_kernel_large.json"
# 3. whole networks at 224x224, batch 32: snnbench (eager PyTorch steps, compiled steps, Triton kernel)
#    vs the official code (multi- and single-step) on the same thresholds; per-frame time and peak memory
OFF=(); [ -d "$OFFICIAL_DCGS/neurons" ] && OFF=(--official-dcgs "$OFFICIAL_DCGS")
MODES=eager,fused,triton; [ ${#OFF[@]} -gt 0 ] && MODES=$MODES,official_m,official_s
step official_resnet18 110 $PY -m benchmarks.bench_official "${OFF[@]}" --device cuda --model resnet18 --size 224 \
  --batch 32 --T 4,16,64 --modes $MODES --repeats 3 --out "$OUT/official_resnet18.json"
step official_resnet34 60 $PY -m benchmarks.bench_official "${OFF[@]}" --device cuda --model resnet34 --size 224 \
  --batch 32 --T 4,16 --modes $MODES --repeats 3 --out "$OUT/official_resnet34.json"
# 4. simulation overhead vs the ANN on the embedded models (kernel=auto: Triton on CUDA)
step simulation 45 $PY -m benchmarks.bench_simulation --device cuda --repeats 3 --T 8 --batch 64 --out "$OUT/simulation_cuda.json"
echo "total $(( $(date +%s) - START ))s" | tee -a "$OUT/steps.txt"
cat "$OUT/steps.txt"
