#!/usr/bin/env bash
# Downloads, on a machine whose pip reaches a package index, the wheels that a GPU machine without an index lacks
# (its image has PyTorch, transformers, accelerate, scipy, einops... but not these) into .whl/ (git-ignored), for
# Python 3.12 on x86-64. Extra `NAME==VERSION` arguments are fetched too (e.g. `pyarrow==24.0.0` when the machine's
# is older than datasets needs; scripts/gpu_check.sh stops at once, naming the import that failed).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 xxhash==3.6.0 lmdb==3.0.0 "$@"
ls -l .whl
