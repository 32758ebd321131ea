#!/usr/bin/env bash
# The checks that need a GPU, in one run from the repository root, most important first:
#   1. the model tests on CUDA (tests/test_devices.py runs each case on CPU and CUDA);
#   2. the CUDA benchmarks: fp32 and bf16-autocast training steps, and long-video inference in fp32, under bf16
#      autocast and with bfloat16 weights (model_cuda.json);
#   2b. the retrieval encoder's attention with its (S, S) selector bias written out and in the factored form that
#       inference runs, beside bias-free kernels (attention_cuda_*.json);
#   3. top-1 agreement of both bf16 forms with random weights over 128 queries per video, with a profile of the
#      bfloat16-weights pass (model_cuda_agreement.json, gpu_profile.txt);
#   3a. MAD and Ego4D inference in fp32 and with bfloat16 weights, the retrieval encoder's selector bias written
#       out as before the factored selector attention (model_cuda_selector_bias.json, against the same precisions
#       in model_cuda_agreement.json);
#   3b. Ego4D inference with 64 queries per forward (model_cuda_ego4d_64-queries.json), and MAD inference with
#       post-processing not overlapped with the next forward (model_cuda_no_overlap.json);
#   4. with RGNET_TRAINED_MODEL=<a saved quickstart model>: agreement of both bf16 forms and metrics of that model
#      on the synthetic test and validation videos, regenerated from RGNET_TRAINED_SEED (default 0)
#      (model_cuda_precision_trained.json);
#   5. the MAD training step and inference with cuDNN attention ruled out (model_cuda_no_cudnn_attention.json): under
#      bf16, PyTorch picks cuDNN for the retrieval encoder's biased attention, which the profile showed slow (training
#      still writes the bias out; inference does only for the windows with padded keys);
#   6. torch.compile: bf16 and fp32 MAD and Ego4D NaQ training steps with a profile (model_cuda_compiled_train.json,
#      gpu_profile_compiled_train.txt), then bf16 inference, both forms (model_cuda_compiled.json);
#   7. CUDA graphs, torch.compile's `reduce-overhead` mode: the bf16 MAD training step, then Ego4D and MAD inference,
#      both bf16 forms, with 128 queries as in step 3 (model_cuda_compiled_cudagraphs.json, against step 6's files).
# Logs and JSON go to benchmarks/results/, or with $OUT set (the device tool, which returns at most 8 files) to one
# archive, $OUT/gpu_check_results.tar.gz, rewritten after every step so that a run cut short keeps what it finished.
# RGNET_GPU_CHECK_STEPS picks steps, comma-separated, of: tests, benchmark, attention, agreement, selector_bias,
# ego4d_64, no_overlap, trained, no_cudnn, compile, cudagraphs (default: all; e.g. two device calls under 600 s each;
# `cudagraphs` alone runs step 7).
# RGNET_GPU_CHECK_COMPILE=0 skips the compiled runs (steps 6 and 7).
# Wheels in .whl/ (scripts/fetch_device_wheels.sh) are installed first, for a machine without a package index; those
# in .whl/fallback/ (pyarrow, transformers) only when the machine's own versions do not import.
set -uo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
if [[ -n "${OUT:-}" ]]; then
    out=/tmp/gpu_check_results
fi
mkdir -p "$out"
archive() {  # after every step: one file for the device tool to return
    if [[ -n "${OUT:-}" ]]; then
        tar czf "$OUT/.partial.tar.gz" -C "$out" . && mv "$OUT/.partial.tar.gz" "$OUT/gpu_check_results.tar.gz"
    fi
}
steps=",${RGNET_GPU_CHECK_STEPS:-tests,benchmark,attention,agreement,selector_bias,ego4d_64,no_overlap,trained,no_cudnn,compile,cudagraphs},"
wanted() { [[ "$steps" == *",$1,"* ]]; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python=${PYTHON:-python3}
install() { "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}  # where the carried wheels go
if compgen -G ".whl/*.whl" > /dev/null; then
    install .whl/*.whl || exit 1
fi
imports="import datasets, evaluate, scipy, einops, accelerate, modeling_rgnet, processing_rgnet, training_rgnet"
imports+=", scripts.benchmark_model"
if ! "$python" -c "$imports" && compgen -G ".whl/fallback/*.whl" > /dev/null; then
    # One fallback wheel at a time (pyarrow sorts first), until the imports work.
    for wheel in .whl/fallback/*.whl; do
        echo "installing fallback $wheel"
        install "$wheel" && "$python" -c "$imports" && break
    done
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$python" -c "import torch, transformers, datasets, pyarrow; print(torch.__version__, transformers.__version__, \
datasets.__version__, pyarrow.__version__)"
} 2>&1 | tee "$out/gpu_environment.txt"
# Stop before spending device time when a package is missing.
"$python" -c "$imports" || exit 1
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available')" || exit 1
status=0
archive
if wanted tests; then
    # The CPU cases of the inductor compile tests are left to the CPU machine (each compiles for about a minute).
    timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_modeling_rgnet.py \
        tests/test_modeling_rgnet_fast_paths.py \
        --deselect "tests/test_devices.py::test_compiled_training_step_matches_eager[cpu-inductor]" \
        --deselect "tests/test_devices.py::test_compiled_top_k_window_inference_matches_eager[cpu-inductor]" \
        2>&1 | tee "$out/gpu_tests.log" || status=1
    archive
fi
benchmark() {  # each run at most ${RGNET_STEP_TIMEOUT:-400} s, so that a hung one leaves the later ones their time
    timeout "${RGNET_STEP_TIMEOUT:-400}" "$python" scripts/benchmark_model.py --device cuda "$@" 2>&1 \
        | tee -a "$out/gpu_benchmark.log" || status=1
    archive
}
if wanted benchmark; then
    benchmark --steps 5 --warmup 2 --output "$out/model_cuda.json"
fi
if wanted attention; then  # the encoder attention: its selector bias written out, factored, and bias-free (seconds)
    for precision in bf16 fp32; do
        timeout 120 "$python" scripts/benchmark_attention.py --device cuda --precision "$precision" \
            --output "$out/attention_cuda_$precision.json" 2>&1 | tee -a "$out/gpu_benchmark.log" || status=1
    done
    archive
fi
# Agreement: 128 queries per video, one forward per 16 queries (16 × 81 MAD windows = 1296 pairs).
many_queries=(--pipelines shared_windows --inference-queries 128 --queries-per-batch 16 --inference-chunk-pairs 1296)
if wanted agreement; then
    benchmark --workloads mad-inference,ego4d-inference "${many_queries[@]}" --steps 3 --profile "$out/gpu_profile.txt" \
        --output "$out/model_cuda_agreement.json"
fi
if wanted selector_bias; then  # the same with the selector bias written out: what the factored attention saves
    benchmark --workloads mad-inference,ego4d-inference "${many_queries[@]}" --precisions bf16-weights,fp32 \
        --selector-bias --steps 3 --output "$out/model_cuda_selector_bias.json"
fi
if wanted ego4d_64; then  # Ego4D's 21 short windows leave a 16-query forward bound by kernel launches
    benchmark --workloads ego4d-inference --pipelines shared_windows --inference-queries 128 --queries-per-batch 64 \
        --inference-chunk-pairs 1344 --steps 3 --output "$out/model_cuda_ego4d_64-queries.json"
fi
if wanted no_overlap; then  # MAD inference with post-processing after each forward instead of beside the next one
    benchmark --workloads mad-inference "${many_queries[@]}" --precisions bf16-weights --overlap-post-processing off \
        --steps 3 --output "$out/model_cuda_no_overlap.json"
fi
if wanted trained && [[ -n "${RGNET_TRAINED_MODEL:-}" ]]; then
    "$python" scripts/make_synthetic_dataset.py --seed "${RGNET_TRAINED_SEED:-0}" --output /tmp/rgnet-synthetic \
        --no-progress --reuse 2>&1 | tee -a "$out/gpu_benchmark.log" || status=1
    timeout 300 "$python" scripts/benchmark_precision.py --model_dir "$RGNET_TRAINED_MODEL" \
        --dataset_dir /tmp/rgnet-synthetic --split test,validation --device cuda \
        --output "$out/model_cuda_precision_trained.json" 2>&1 | tee -a "$out/gpu_benchmark.log" || status=1
    archive
fi
if wanted no_cudnn; then
    benchmark --workloads mad-train,mad-inference,ego4d-inference "${many_queries[@]}" \
        --sdpa-backends flash,efficient,math --steps 3 --output "$out/model_cuda_no_cudnn_attention.json"
fi
if [[ "${RGNET_GPU_CHECK_COMPILE:-1}" == 0 ]]; then  # the compiled runs take minutes
    exit $status
fi
if wanted compile; then
    # Training first: an eager step is bound by launching its ~4,000 kernels; the profile counts the compiled step's.
    benchmark --compile --workloads mad-train,ego4d-pretrain-train --precisions bf16,fp32 --steps 5 --warmup 2 \
        --profile "$out/gpu_profile_compiled_train.txt" --output "$out/model_cuda_compiled_train.json"
    benchmark --compile --workloads mad-inference,ego4d-inference "${many_queries[@]}" --precisions bf16,bf16-weights \
        --steps 3 --warmup 2 --output "$out/model_cuda_compiled.json"
fi
if wanted cudagraphs; then
    # The compiled code replayed as CUDA graphs (cudagraph trees, one graph per segment between the model's graph
    # breaks; each is recorded at its second call, in the warm-up). Training runs bf16 only (bf16-weights is inference's).
    benchmark --compile --compile-mode reduce-overhead --workloads mad-train,ego4d-inference,mad-inference \
        "${many_queries[@]}" --precisions bf16,bf16-weights --steps 3 --warmup 2 \
        --output "$out/model_cuda_compiled_cudagraphs.json"
fi
exit $status
