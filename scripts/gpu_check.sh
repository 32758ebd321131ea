#!/usr/bin/env bash
# The checks that need a GPU, in one run from the repository root: the model tests on CUDA (tests/test_devices.py
# runs each case on CPU and CUDA) and the CUDA benchmarks (fp32 and bf16 training steps and long-video inference;
# bf16 top-1 agreement over 128 queries per video). Logs and JSON go to $OUT when set, else benchmarks/results/.
# Wheels in .whl/ (scripts/fetch_device_wheels.sh) are installed first, for a machine without a package index.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$python" -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__)"
} 2>&1 | tee "$out/gpu_environment.txt"
# Stop before spending device time when a package is missing.
"$python" -c "import torch, transformers, datasets, evaluate, scipy, einops, accelerate" || exit 1
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available')" || exit 1
status=0
"$python" -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_modeling_rgnet.py \
    tests/test_modeling_rgnet_fast_paths.py 2>&1 | tee "$out/gpu_tests.log" || status=1
"$python" scripts/benchmark_model.py --device cuda --steps 5 --warmup 2 --output "$out/model_cuda.json" 2>&1 \
    | tee "$out/gpu_benchmark.log" || status=1
"$python" scripts/benchmark_model.py --device cuda --workloads mad-inference,ego4d-inference --inference-queries 128 \
    --queries-per-batch 16 --steps 3 --output "$out/model_cuda_agreement.json" 2>&1 | tee -a "$out/gpu_benchmark.log" \
    || status=1
exit $status
