#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_measure.sh installs on the GPU machine (no network there).
#
#   bash benchmarks/gpu_wheelhouse.sh [DIR]     # default .whl (git-ignored); carry it
#
# Only what the GPU image lacks or has at another version than this project's pins
# (../shared/STACK.md): transformers 4.57.6 (the image has 5.x), the huggingface-hub < 1.0
# and tokenizers <= 0.23.0 it requires, and torchao 0.18.0 (FP8 and INT8 weight-only rows;
# it needs torch >= 2.11). Everything else (torch above all) is the image's. The wheels are
# for CPython 3.12 on x86-64 Linux, the image's Python. Fails if they outgrow MAX_MB, since
# the working tree, the wheels and a packed run travel together within 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
MAX_MB=${MAX_MB:-25}
PYTHON=${PYTHON:-python3}
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
mkdir -p "$DIR"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]/#/--platform=}" -d "$DIR" \
  transformers==4.57.6 huggingface-hub==0.36.2 tokenizers==0.22.2 torchao==0.18.0
ls -l "$DIR"
mb=$(du -sm "$DIR" | cut -f1)
echo "$DIR: $mb MB"
if [ "$mb" -gt "$MAX_MB" ]; then
  echo "gpu_wheelhouse: $DIR is $mb MB, over $MAX_MB MB: remove other wheels from it" >&2
  exit 1
fi
