#!/usr/bin/env bash
# Every benchmark BENCHMARKS.md quotes, in one run, with the commands and sizes it quotes.
# Run from the repository root on a quiet machine (nothing else running: the ratios are paired
# within one process, but the contention and sweep benchmarks use every core).
#
#   OUT=dir [STEPS="simulation fused ..."] [OFFICIAL_DCGS=checkout] [BEFORE=dir PYBEFORE=python] \
#       bash benchmarks/run_all.sh
#
# Each step has its own timeout and writes $OUT/<step>.log and $OUT/<step>.json; a failing step
# does not stop the others. OFFICIAL_DCGS is a checkout of github.com/h-z-h-cell/ANN-to-SNN-DCGS
# that you fetched yourself (never vendored); without it the official columns are skipped.
# BEFORE (optional) is a worktree of an older commit with snnbench installed for PYBEFORE: the
# fused-step benchmark then also runs there ("before" columns of section 6).
OUT=${OUT:-benchmarks/out/run_all}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  echo "== $name start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/steps.txt"
  timeout --kill-after=10 "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/steps.txt"
}
OFFICIAL=()
[ -n "$OFFICIAL_DCGS" ] && OFFICIAL=(--official-dcgs "$OFFICIAL_DCGS")
for s in ${STEPS:-simulation fused fused_before calibration contention official memory thresholds mt_kernel sweep}; do
  case $s in
  simulation) step simulation 1500 $PY -m benchmarks.bench_simulation --threads 1 --repeats 11 --frame --out "$OUT/simulation.json" ;;
  fused) step fused 1200 $PY -m benchmarks.bench_fused --T 4 --repeats 3 --out "$OUT/fused.json" ;;
  fused_before)
    if [ -n "$BEFORE" ]; then
      cp benchmarks/bench_fused.py benchmarks/common.py "$BEFORE/benchmarks/"
      (cd "$BEFORE" && step fused_before 900 "${PYBEFORE:-$PY}" -m benchmarks.bench_fused --T 4 --repeats 3 \
        --out "$OUT/fused_before.json")
    fi ;;
  calibration) step calibration 1200 $PY -m benchmarks.bench_calibration --parts correction,stats,graph,detection,counting \
      --fuse true --trained --out "$OUT/calibration.json" ;;
  contention) step contention 900 $PY -m benchmarks.bench_contention --batch 16 --T 4 --repeats 3 --ray \
      --out "$OUT/contention.json" ;;
  official) step official 900 $PY -m benchmarks.bench_official "${OFFICIAL[@]}" --model resnet18 --size 224 --batch 4 \
      --T 4,16 --repeats 3 --threads 2 --out "$OUT/official.json" ;;
  memory) step memory 600 $PY -m benchmarks.bench_memory --out "$OUT/memory.json" ;;
  thresholds) step thresholds 600 $PY -m benchmarks.bench_thresholds --out "$OUT/thresholds.json" ;;
  mt_kernel) step mt_kernel 600 $PY -m benchmarks.bench_mt_kernel --threads 1 --out "$OUT/mt_kernel.json" ;;
  sweep) step sweep 900 $PY -m benchmarks.bench_sweep --out "$OUT/sweep.json" ;;
  *) echo "unknown step $s" ;;
  esac
done
echo "== all done $(date +%T)" | tee -a "$OUT/steps.txt"
