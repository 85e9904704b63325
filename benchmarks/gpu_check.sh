#!/usr/bin/env bash
# The device check of issues 12 (item 6) and 13: at most 8 minutes on one GPU (H100/H200), run from
# the repository root. It installs nothing the device image lacks except the carried wheels in
# .whl/ (optuna and its needs, diffusers, pytorch-fid: see --fetch-wheels), and writes under $OUT:
#   gpu_check.log          every command and its output
#   gpu_check.json         each step's command, exit code and seconds, plus every benchmark's JSON
#   smoke_results.tar.gz   the result folders of the CUDA smoke run and the torchrun smoke
# Steps, most important first; each has a time limit and the whole script a deadline (470 s):
# a step that would start too late is recorded as skipped, never half-reported.
#
#   benchmarks/gpu_check.sh --fetch-wheels   # on the development machine (pip reaches PyPI)
#   benchmarks/gpu_check.sh --dry-run        # print every command, check every file it needs
#   benchmarks/gpu_check.sh                  # on the device (OUT=... or ./gpu_check_out)
#
# The Inception weights are too big to carry: FID feature timing uses random weights of the same
# network (benchmarks/fid50k_timing.py says so in its output), and the smoke run scores recon
# (SSIM/PSNR) instead of FID/KID.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
OUT=${OUT:-$PWD/gpu_check_out}
PY=${PYTHON:-python3}
DEADLINE=${GPU_CHECK_DEADLINE:-470}
WHEELS="diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 optuna==5.0.0
alembic==1.20.1 sqlalchemy==2.1.9 mako==1.4.3 colorlog==6.12.0 cmaes==0.13.1 pytorch-fid==0.3.0"
NEEDED="benchmarks/train_throughput.py benchmarks/sampling_throughput.py benchmarks/fid50k_timing.py
benchmarks/attention_audit.py benchmarks/common.py suites/smoke.yaml tests/test_fastpath.py
tests/test_sampling_precision.py tests/test_train_sync.py"
SMOKE_SET="--set 'eval.metrics=[recon]' --set train.device=cuda --no-progress"
TINY_SET="--set 'eval.metrics=[]' --set budget.kimg=0.5 --set 'seeds=[0]' --set train.device=cuda --no-progress"
TORCHRUN="$PY -m torch.distributed.run --standalone --nproc_per_node 1"

if [[ $MODE == --fetch-wheels ]]; then
  mkdir -p .whl
  # shellcheck disable=SC2086
  exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $WHEELS
fi

STEPS=()   # "name|limit|command" in order
ONLY=${GPU_CHECK_ONLY:-}   # comma-separated step names (to rerun a few); empty = all
add() { [[ -z $ONLY || ,$ONLY, == *,$1,* ]] && STEPS+=("$1|$2|$3"); return 0; }
add env 20 "nvidia-smi; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
add cuda_tests 90 "$PY -m pytest -q -p no:cacheprovider -m 'not slow' tests/test_fastpath.py tests/test_sampling_precision.py tests/test_train_sync.py -rs"
add train_b128 70 "$PY benchmarks/train_throughput.py --batch 128 --amp bf16 --steps 50 --warmup 10 --repeats 2 --out \$OUT/train_throughput.json"
add sampling_b128 40 "$PY benchmarks/sampling_throughput.py --arch unet_ddpm --image-size 32 --batch 128 --amp bf16 --samplers ddim --steps 10,100 --out \$OUT/sampling_throughput.json"
add sampling_b128_graphs 40 "$PY benchmarks/sampling_throughput.py --arch unet_ddpm --image-size 32 --batch 128 --amp bf16 --samplers ddim --steps 10,100 --cuda-graphs --out \$OUT/sampling_graphs.json"
add smoke_cuda 120 "$PY -m bench run suites/smoke.yaml $SMOKE_SET --results \$OUT/results"
add nccl 25 "$TORCHRUN benchmarks/nccl_smoke.py"
add torchrun_smoke 45 "$TORCHRUN -m bench run suites/smoke.yaml $TINY_SET --results \$OUT/results_torchrun"
add fid50k 50 "$PY benchmarks/fid50k_timing.py --n 5000 --batch 1000 --amp bf16 --out \$OUT/fid50k_timing.json"
add attention 30 "$PY benchmarks/attention_audit.py --device cuda --out \$OUT/attention_audit.json"
add train_compile 100 "$PY benchmarks/train_throughput.py --batch 128 --amp bf16 --steps 50 --warmup 10 --compile true --loops harness,bare --out \$OUT/train_compile.json"

if [[ $MODE == --dry-run ]]; then
  missing=0
  for f in $NEEDED benchmarks/nccl_smoke.py; do
    if [[ -f $f ]]; then echo "ok      $f"; else echo "MISSING $f"; missing=1; fi
  done
  if ls .whl/*.whl >/dev/null 2>&1; then echo "ok      .whl/ ($(ls .whl/*.whl | wc -l) wheels; carry it: run(carry=['.whl']))"
  else echo "note    .whl/ is empty: run benchmarks/gpu_check.sh --fetch-wheels here first"; fi
  total=0
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<<"$s"; total=$((total + limit))
    printf '%-22s %4ss  %s\n' "$name" "$limit" "$cmd"
  done
  echo "sum of step limits ${total}s; deadline ${DEADLINE}s (later steps are skipped past it)"
  exit $missing
fi

mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
LOG=$OUT/gpu_check.log
: >"$LOG"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 \
    && export PYTHONPATH=/tmp/site:$PWD || echo "wheel install failed (see log)" | tee -a "$LOG"
else
  export PYTHONPATH=$PWD
fi
START=$SECONDS
RECORDS=$OUT/steps.jsonl
: >"$RECORDS"
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  left=$((DEADLINE - (SECONDS - START)))
  if (( left < 15 )); then
    echo "== $name: skipped (deadline)" | tee -a "$LOG"
    printf '{"step": "%s", "rc": null, "skipped": "deadline", "seconds": 0}\n' "$name" >>"$RECORDS"
    continue
  fi
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s): $cmd" | tee -a "$LOG"
  t0=$SECONDS
  timeout --kill-after=5 "$limit" bash -c "$cmd" >>"$LOG" 2>&1
  rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
  printf '{"step": "%s", "rc": %d, "seconds": %d, "limit": %d}\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$RECORDS"
done
tar czf "$OUT/smoke_results.tar.gz" -C "$OUT" $(cd "$OUT" && ls -d results results_torchrun 2>/dev/null) 2>>"$LOG"
rm -rf "$OUT/results" "$OUT/results_torchrun"
$PY - "$OUT" <<'EOF' >>"$LOG" 2>&1
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
benchmarks = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "gpu_check.json"}
(out / "gpu_check.json").write_text(json.dumps({"steps": steps, "benchmarks": benchmarks}, indent=1))
for p in out.glob("*.json"):
    if p.name != "gpu_check.json":
        p.unlink()
(out / "steps.jsonl").unlink()
print("wrote", out / "gpu_check.json")
EOF
echo "total $((SECONDS - START))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
