#!/usr/bin/env bash
# The project's GPU check: the CUDA tests and the benchmarks on one GPU, in one command of about 7 minutes.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh          # on the GPU machine, from the repository root
#   GPU_CHECK_SMOKE=1 OUT=/tmp/gpu_out PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh   # tiny sizes, CPU
#
# Missing packages travel as wheels in .whl/ (captum, pydantic and what they need beyond the machine's
# own packages); they go to /tmp/site unless the interpreter already imports them. The package itself is
# used from this source tree (PYTHONPATH). Each part has its own time limit and writes its own file
# under $OUT, so that a slow part cannot take the others' figures with it:
#   log            machine, versions, each part's start, end and exit status
#   tests.txt      the CUDA-only tests and the GPU-relevant test files
#   bench_lam.txt  LAM vs the demo's loop vs the floor, per internal_batch_size, with peak memory
#   bench_scale.txt  whole images (default call vs the full image at every step), K windows of one image
#   rounding.txt   float32 rounding of the full image (vs float64, vs cuDNN off) beside the crop's difference
#   windows_shared.txt      K = 1 and 16 windows, close ones sharing a crop instead of each on its own, stacked
#   calls.txt      K = 16 windows: model calls, backward passes and time, one at a time vs shared vs stacked crops
#   windows_sequential.txt  K = 16 windows with K backward passes per step instead of one vectorised pass
#   windows_unpadded.txt    K = 1 and 16 windows on crops of any shape instead of sides a multiple of 8
#   references.txt the full-image pass of 16 windows: backward passes shared vs one per window
#   memory.txt     time per path step and peak memory vs rows: the budget behind internal_batch_size
#   peak.txt       peak memory of the default call vs the full image (each call in a fresh process)
#   bench_sweep.txt  a sweep of 1 model x 4 photos x 16 windows: 1 vs 16 windows per LAM pass
#   statistics.txt forward passes recorded (the search for a statistic of the whole image) vs not
# GPU_CHECK_SECONDS (default 500; 1500 for the smoke run) bounds the whole run: a part never gets more than what is left.
set -u -o pipefail

OUT=${OUT:?set OUT to the folder for the results}
PY=${PYTHON:-python3}
SMOKE=${GPU_CHECK_SMOKE:-0}
# The limits are the GPU's; the smoke run's tiny sizes on a shared CPU get three times as long.
FACTOR=$((SMOKE == 1 ? 3 : 1))
TOTAL=${GPU_CHECK_SECONDS:-$((500 * FACTOR))}
mkdir -p "$OUT"
FAILED=()
START=$SECONDS

log() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$OUT/log"; }

# part NAME LIMIT FILE COMMAND...: run COMMAND under min(LIMIT, time left) seconds, output into $OUT/FILE.
part() {
    local name=$1 limit=$2 file=$3 left status
    shift 3
    limit=$((limit * FACTOR))
    left=$((TOTAL - (SECONDS - START)))
    if ((left < 20)); then
        log "SKIP $name: only ${left}s of the ${TOTAL}s left"
        FAILED+=("$name (skipped)")
        return
    fi
    ((limit > left)) && limit=$left
    log "start $name (limit ${limit}s) -> $file: $*"
    timeout -k 10 "$limit" "$@" >"$OUT/$file" 2>&1
    status=$?
    if ((status == 0)); then
        log "end $name: ok"
    else
        ((status == 124 || status == 137)) && status="$status (timed out after ${limit}s)"
        log "end $name: FAILED, exit $status; last lines:"
        { tail -n 15 "$OUT/$file"; echo; } | tee -a "$OUT/log"
        FAILED+=("$name")
    fi
}

install_wheels() {
    if "$PY" -c "import captum, pydantic, pydantic_core, annotated_types, typing_inspection" 2>/dev/null; then
        log "captum and pydantic already import: no wheels installed"
    elif compgen -G ".whl/*.whl" >/dev/null; then
        log "installing $(ls .whl | tr '\n' ' ')into /tmp/site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl >>"$OUT/log" 2>&1 \
            || "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall('/tmp/site') for w in sys.argv[1:]]" \
                .whl/*.whl >>"$OUT/log" 2>&1 \
            || log "could not install the wheels"
    else
        log "no .whl/ folder and captum or pydantic missing: the parts below will fail"
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
}

describe_machine() {
    { command -v nvidia-smi >/dev/null && nvidia-smi; nproc; free -g | head -2; } >>"$OUT/log" 2>&1
    "$PY" - >>"$OUT/log" 2>&1 <<'EOF'
import platform
import torch, captum, pydantic, lightning, numpy
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), captum {captum.__version__}, pydantic {pydantic.__version__}, "
      f"lightning {lightning.__version__}, numpy {numpy.__version__}")
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print(f"GPU: {properties.name}, {properties.total_memory / 2**30:.1f} GiB, capability "
          f"{properties.major}.{properties.minor}; TF32 convolutions {torch.backends.cudnn.allow_tf32}, "
          f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")
import lam_captum
print("lam_captum from", lam_captum.__file__)
EOF
}

export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::DeprecationWarning
log "GPU check in $PWD, smoke=$SMOKE, at most ${TOTAL}s"
install_wheels
describe_machine
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEVICE=cuda
elif [[ $SMOKE == 1 ]]; then
    DEVICE=cpu
else
    log "no CUDA device: the full check needs one (GPU_CHECK_SMOKE=1 runs the tiny sizes on the CPU)"
    exit 1
fi
log "device: $DEVICE"

# Not -x: the CUDA tests are the point, and test_lam's tolerance (rtol 1e-4) may meet torch's default
# TF32 convolutions; --maxfail still stops a broken build early.
part tests 75 tests.txt "$PY" -m pytest --maxfail=3 -q -rs -p no:cacheprovider \
    tests/test_lam.py::test_gpu_result_equals_cpu_result_and_stays_on_the_gpu \
    tests/test_edges_core.py::test_the_estimate_is_near_the_real_peak_on_a_gpu \
    tests/test_edges_core.py::test_memory_the_caching_allocator_keeps_after_a_call_counts_as_free \
    tests/test_kde.py::test_dtype_and_device_preserved \
    tests/test_multi_window.py tests/test_region.py tests/test_stacked_crops.py tests/test_statistics.py

if [[ $SMOKE == 1 ]]; then
    LAM_ARGS=(--size 8 --steps 2 --repeats 1 --batch-sizes 1,2)
    SCALE_ARGS=(--sizes 16x16,24x24 --steps 4 --floor-steps 16x16:4,24x24:2 --windows-size 16 --windows 1,4
                --windows-steps 3)
    SEQUENTIAL_ARGS=(--skip whole --windows-size 16 --windows 4 --windows-steps 3)
    SHARED_ARGS=(--skip whole --windows-size 24 --windows 1,4 --windows-steps 3)
    CALLS_ARGS=(--size 48 --windows 4 --steps 3)
    UNPADDED_ARGS=(--skip whole --windows-size 24 --windows 1,4 --windows-steps 3)
    REFERENCES_ARGS=(--sizes 32x32 --windows 4)
    BUDGET_ARGS=(--sizes 16,24 --rows 1,2,4 --steps 4 --windows 4 --windows-size 16)
    SWEEP_ARGS=(--images 2 --windows 4 --lr-size 24 --n-steps 5 --windows-per-pass 4)
    ROUNDING_ARGS=(--sizes 16x16,24x24 --steps 2)
    PEAK_ARGS=(--models default --sizes 16x16 --steps 2 --full-steps 2 --windows 2)
    STATISTICS_ARGS=(--sizes 16x16 --repeats 1 --n-steps 2)
else
    LAM_ARGS=(--size 64 --steps 50 --repeats 3 --batch-sizes 1,2,4,8,16,25,50)
    SCALE_ARGS=(--sizes 64x64,256x256,339x510 --steps 50 --floor-steps 64x64:50,256x256:50,339x510:50
                --windows-size 128 --windows 1,4,16 --windows-steps 50)
    SEQUENTIAL_ARGS=(--skip whole --windows-size 128 --windows 16 --windows-steps 50)
    SHARED_ARGS=(--skip whole --windows-size 128 --windows 1,16 --windows-steps 50)
    CALLS_ARGS=(--size 128 --windows 16 --steps 50)
    UNPADDED_ARGS=(--skip whole --windows-size 128 --windows 1,16 --windows-steps 50)
    REFERENCES_ARGS=(--sizes 128x128,256x256,339x510 --windows 16)
    BUDGET_ARGS=(--sizes 64,128 --rows 1,2,4,8,16,25,50 --steps 50 --windows 16 --windows-size 64)
    SWEEP_ARGS=(--images 4 --windows 16 --lr-size 64 --n-steps 50 --windows-per-pass 16)
    ROUNDING_ARGS=(--sizes 64x64,256x256,339x510 --steps 10)
    PEAK_ARGS=(--models edsr-baseline --sizes 339x510 --steps 50 --full-steps 50 --windows 0)
    STATISTICS_ARGS=(--sizes 64x64,256x256,339x510 --repeats 5 --n-steps 50)
fi
part bench_lam 60 bench_lam.txt "$PY" benchmarks/bench_lam.py --device "$DEVICE" "${LAM_ARGS[@]}"
part bench_scale 110 bench_scale.txt "$PY" benchmarks/bench_scale.py --device "$DEVICE" "${SCALE_ARGS[@]}"
part windows_shared 45 windows_shared.txt "$PY" benchmarks/bench_scale.py --device "$DEVICE" \
    --stack-crops off "${SHARED_ARGS[@]}"
part calls 40 calls.txt "$PY" benchmarks/bench_calls.py --device "$DEVICE" "${CALLS_ARGS[@]}"
part rounding 60 rounding.txt "$PY" benchmarks/bench_rounding.py --device "$DEVICE" "${ROUNDING_ARGS[@]}"
part windows_sequential 45 windows_sequential.txt "$PY" benchmarks/bench_scale.py --device "$DEVICE" \
    --backward sequential "${SEQUENTIAL_ARGS[@]}"
part windows_unpadded 45 windows_unpadded.txt "$PY" benchmarks/bench_scale.py --device "$DEVICE" \
    --crop-quantum 1 "${UNPADDED_ARGS[@]}"
part references 30 references.txt "$PY" benchmarks/bench_references.py --device "$DEVICE" "${REFERENCES_ARGS[@]}"
part memory 60 memory.txt "$PY" benchmarks/bench_budget.py --device "$DEVICE" "${BUDGET_ARGS[@]}"
part peak 90 peak.txt "$PY" benchmarks/bench_peak.py --device "$DEVICE" "${PEAK_ARGS[@]}"
part bench_sweep 115 bench_sweep.txt "$PY" benchmarks/bench_sweep.py "${SWEEP_ARGS[@]}"
part statistics 30 statistics.txt "$PY" benchmarks/bench_statistics.py --device "$DEVICE" "${STATISTICS_ARGS[@]}"

# The tables again on stdout, the most compact last, in case the files do not come back.
for file in statistics.txt bench_scale.txt windows_shared.txt calls.txt rounding.txt windows_sequential.txt windows_unpadded.txt references.txt bench_sweep.txt peak.txt bench_lam.txt memory.txt tests.txt; do
    [[ -f $OUT/$file ]] && { echo "== $file"; tail -n 30 "$OUT/$file" | cut -c1-170; }
done
if ((${#FAILED[@]})); then
    log "done in $((SECONDS - START))s; FAILED: ${FAILED[*]}"
    exit 1
fi
log "done in $((SECONDS - START))s; every part ok"
