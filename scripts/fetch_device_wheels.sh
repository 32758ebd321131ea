#!/usr/bin/env bash
# Downloads, on a machine whose pip reaches a package index, the wheels that a GPU machine without an index lacks
# (its image has PyTorch, transformers, accelerate, scipy, einops... but not these) into .whl/ (git-ignored), for
# Python 3.12 on x86-64, and into .whl/fallback/ the ones scripts/gpu_check.sh installs only when the machine's own
# versions do not import (pyarrow older than datasets needs, a transformers too old for this package). Extra
# `NAME==VERSION` arguments are fetched into .whl/ too. Everything must stay under the device's 64 MiB carry limit.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl/fallback
download() {
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$@"
}
download -d .whl datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 xxhash==3.6.0 lmdb==3.0.0 "$@"
download -d .whl/fallback pyarrow==24.0.0 transformers==5.24.0
ls -lR .whl
du -cb .whl | tail -1
