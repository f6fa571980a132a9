#!/usr/bin/env bash
# The GPU check: one script, one report, under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                 # on a machine with a CUDA build of torch
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   # the same steps, tiny, on CPU (a smoke test)
#
# Needs only this repository and a CUDA torch (torchvision is used when it imports). Runs, in
# order, each step under its own time limit so one slow step cannot eat the others' time:
#   1. the CUDA tests (pytest -m cuda);
#   2. deform_conv2d: the pure path, the dispatched call, torchvision's kernel and conv2d;
#   3. the latency table of crmef (C=32, batch 16, 128x128) and the predictor check
#      (--validate 20 random derived nets, 10 more to calibrate);
#   4. two short searches, eta 0 and eta 1 (the paper's penalty, that table; 4 epochs of 256
#      crops at batch 16), on the bundled photos;
#   5. inference latency of every registry network and the two derived nets at batch 1,
#      1024x768: eager vs channels_last, and eager vs torch.compile for the derived nets;
#   6. one search step (C=32, batch 16, 128x128) per speed setting: time and peak GPU memory;
#   7. bf16 vs fp32 derived genotypes on the tiny preset against seed noise.
# Writes results/gpu/<device>/report.md (every step's output, its wall time and exit status)
# next to the step files; a step that fails is reported and the script goes on.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}

slug=$($PY - "$DEVICE" <<'EOF'
import re, sys, torch
d = sys.argv[1]
name = torch.cuda.get_device_name(0) if d.startswith("cuda") and torch.cuda.is_available() else "cpu"
print(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
EOF
)
OUT=${OUT:-results/gpu/$slug}
mkdir -p "$OUT"
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
# tables go to the repository's latency_tables/ (commit the GPU's); QUICK keeps them apart
[ "$QUICK" = 1 ] && export NAS_TABLES_DIR=${NAS_TABLES_DIR:-$RUNS/tables}
REPORT="$OUT/report.md"
STEPS="$OUT/steps.md"
: > "$STEPS"

if [ "$QUICK" = 1 ]; then  # seconds per step on 2 CPU cores: proves the script, not the GPU
  C=8; B=2; S=32; PROF="--quick --channels 8 --input-size 32 32 --batch 2 --reps 3"
  VAL="--validate 3 --calibrate 2 --reps 3"; SEARCH="--preset tiny --epochs 2 --warmup-epochs 1"
  INF="--size 64 64 --reps 2 --rounds 1 --warmup 1"; STEP="--steps 1 --warmup 1"
  AMPSEEDS="0"; BATCHES=1; DREPS=2; SCALE=5  # a CPU compiles and trains slower
else
  C=32; B=16; S=128; PROF="--channels 32 --input-size 128 128 --batch 16 --reps 300"
  VAL="--validate 20 --calibrate 10"
  SEARCH="--space crmef --channels 32 --batch 16 --crop 128 --epochs 4 --warmup-epochs 1 --samples-per-epoch 256"
  INF="--size 768 1024 --reps 30 --rounds 3 --warmup 5"; STEP="--steps 20 --warmup 5"
  AMPSEEDS="0 1"; BATCHES=1,4,16; DREPS=30; SCALE=1
fi

# per-step time limits (s); they add up to 470 s, so the whole check stays under 8 minutes
L_TESTS=50 L_DEFORM=30 L_PROFILE=40 L_VALIDATE=60 L_SEARCH=60 L_INFER=60 L_COMPILE=50
L_STEP=30 L_AMP=30

step() {  # step LIMIT_S TITLE CMD...
  local limit=$(( $1 * SCALE )) title=$2; shift 2
  local log="$RUNS/step.log" t0=$SECONDS rc
  echo "== $title" >&2
  timeout "$limit" "$@" > "$log" 2>&1; rc=$?
  tail -n 40 "$log" >&2
  {
    echo "## $title"
    echo
    echo "\`$*\` -> exit $rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo " (stopped at the ${limit} s limit)")"
    echo
    echo '```'
    tail -n 60 "$log"
    echo '```'
    echo
  } >> "$STEPS"
}

T0=$SECONDS
step $L_TESTS "1. CUDA tests" $PY -m pytest -q -m cuda -p no:cacheprovider
step $L_DEFORM "2. deform_conv2d vs torchvision and conv2d" \
  $PY benchmarks/bench_deform_conv.py --device "$DEVICE" --batches $BATCHES --reps $DREPS \
  --out "$OUT/deform_conv.txt"
step $L_PROFILE "3a. latency table (crmef, C=$C, batch $B, ${S}x$S)" \
  $PY -m nas.profile --device "$DEVICE" --space crmef $PROF --no-progress
step $L_VALIDATE "3b. predictor check" \
  $PY -m nas.profile --device "$DEVICE" --space crmef $PROF $VAL --results "$OUT" --no-progress
for eta in 0 1; do
  step $L_SEARCH "4. search eta $eta" $PY -m nas.search --device "$DEVICE" $SEARCH --eta $eta \
    --latency-penalty paper --latency-input $S $S --runs-dir "$RUNS" --run-name "eta$eta" \
    --no-progress
done
step $L_INFER "5a. inference, registry networks and derived nets: eager vs channels_last" \
  $PY benchmarks/bench_inference.py --device "$DEVICE" $INF --variants eager channels_last \
  --model "$RUNS/eta0" --model "$RUNS/eta1" --out "$OUT/inference.md"
step $L_COMPILE "5b. inference, derived nets: eager vs torch.compile" \
  $PY benchmarks/bench_inference.py --device "$DEVICE" $INF --variants eager compile \
  --models --model "$RUNS/eta0" --model "$RUNS/eta1" --out "$OUT/inference-compile.md"
step $L_STEP "6. search step (crmef, C=$C, batch $B, ${S}x$S) per speed setting" \
  $PY benchmarks/bench_search_step.py --device "$DEVICE" --channels $C --batch $B --crop $S $STEP \
  --out "$OUT/search_step.md"
step $L_AMP "7. bf16 vs fp32 derived genotypes (tiny preset)" \
  $PY benchmarks/amp_genotype.py --device "$DEVICE" --seeds $AMPSEEDS --out "$OUT/amp_genotype.md"

{
  echo "# GPU check: $slug"
  echo
  echo "Command: \`DEVICE=$DEVICE QUICK=$QUICK bash benchmarks/gpu_check.sh\`; $(date -u +%Y-%m-%dT%H:%MZ); total $((SECONDS - T0)) s."
  $PY - <<'EOF'
import torch
try:
    import torchvision
    tv = torchvision.__version__
except Exception as e:  # noqa: BLE001
    tv = f"does not import ({type(e).__name__})"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, torchvision {tv}, GPU {gpu}")
EOF
  echo
  cat "$STEPS"
} > "$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"
rm -f "$STEPS"
echo "wrote $REPORT ($((SECONDS - T0)) s)"
