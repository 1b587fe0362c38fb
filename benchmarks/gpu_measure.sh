#!/usr/bin/env bash
# Issue 29's GPU measurements in one device call (docs/gpu.md, "How to measure").
#
#   bash benchmarks/gpu_measure.sh [--run .gpu-run] [--out DIR] [any `gpu_measure.py measure` option]
#
# Expects on the GPU machine: an x86-64 Linux with an NVIDIA GPU and a `python3` (3.12) that
# already holds a CUDA build of torch (the lent image: torch 2.11 + CUDA 13) with numpy,
# pyyaml, click, tqdm, safetensors, accelerate, pandas, psutil, py-cpuinfo, onnx,
# onnxruntime and pytest, as that image has. No network. This project is run from its source
# tree (PYTHONPATH), not installed.
# Carry (the device call's `carry`):
#   .whl      the wheels benchmarks/gpu_wheelhouse.sh downloads (transformers 4.57.6 and the
#             huggingface-hub and tokenizers it needs, torchao 0.18.0: this project's pins,
#             where the image's differ); without the folder the image's own packages are used.
#   .gpu-run  optional: a finished run cut down by
#             `python benchmarks/gpu_measure.py pack-run --run runs/default --into .gpu-run`;
#             pass `--run .gpu-run` to bench its student as well.
# Results (at most 8 files, the device tool's limit) go to $OUT, else benchmarks/results:
# gpu_measure.json (card, versions, each phase: passed / failed / timed_out / skipped, why),
# gpu_shapes.json, gpu_serving.json (with --run), gpu_pytest.log, gpu_measure.log.
# The whole call stays within 8 minutes: the wheels install first, then gpu_measure.py gives
# each phase its own timeout inside a 450 s deadline.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${SLIMBERT_GPU_WORK:-/tmp/slimbert-gpu-measure}
WHEELS=${SLIMBERT_WHEELS:-.whl}
mkdir -p "$WORK"
export SLIMBERT_GPU_INSTALL_LOG="$WORK/install.log"
: >"$SLIMBERT_GPU_INSTALL_LOG"
SITE=""
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" "$WHEELS"/*.whl >>"$SLIMBERT_GPU_INSTALL_LOG" 2>&1; then
    SITE="$WORK/site"
    export SLIMBERT_GPU_INSTALL="installed $(cd "$WHEELS" && ls ./*.whl | tr '\n' ' ')"
  else
    export SLIMBERT_GPU_INSTALL="failed (pip install from $WHEELS; the machine's own packages are used)"
  fi
else
  export SLIMBERT_GPU_INSTALL="none: no $WHEELS/*.whl carried; the machine's own packages are used"
fi
echo "wheels: $SLIMBERT_GPU_INSTALL"
export PYTHONPATH="$PWD${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
# a guard above gpu_measure.py's own deadline, in case the orchestrator itself hangs
exec timeout -k 10 500 "$PYTHON" benchmarks/gpu_measure.py measure --work "$WORK" "$@"
