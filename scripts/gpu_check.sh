#!/usr/bin/env bash
# The checks that need a GPU, in one run from the repository root, most important first:
#   1. the model tests on CUDA (tests/test_devices.py runs each case on CPU and CUDA);
#   2. the CUDA benchmarks: fp32 and bf16-autocast training steps, and long-video inference in fp32, under bf16
#      autocast and with bfloat16 weights (model_cuda.json);
#   2b. the retrieval encoder's attention with its (S, S) selector bias written out and in the factored form that
#       inference runs, beside bias-free kernels, and the text-to-video attention under the padding bias and packed
#       (attention_cuda_*.json);
#   2c. the MAD inference target's figure alone (about 2.5 minutes on an H200, compiling included): MAD inference with
#       bfloat16 weights, compiled with CUDA graphs as in step 7, 128 queries as in step 3, with a profile
#       (model_cuda_mad_cudagraphs.json, gpu_profile_mad_cudagraphs.txt);
#   2c'. the same with 32 queries per forward (2,400 pairs; about 17 GB): half the forwards, so half their host reads
#       and launches, against a last forward's post-processing twice as long with nothing left to hide it behind
#       (model_cuda_mad_cudagraphs_32-queries.json);
#   3. top-1 agreement of both bf16 forms with random weights over 128 queries per video, with a profile of the
#      bfloat16-weights pass (model_cuda_agreement.json, gpu_profile.txt);
#   3a. MAD and Ego4D inference, 128 queries, grouped and forwarded as evaluation does by default (whole queries within
#       the device's `default_pairs_per_batch`: 17 MAD queries of the workload's 75 windows, all 128 Ego4D ones per
#       forward on a GPU with the memory) in fp32 and with bfloat16 weights (model_cuda_evaluation_chunks.json);
#   3b. MAD and Ego4D inference in fp32 and with bfloat16 weights, the retrieval encoder's selector bias written
#       out as before the factored selector attention (model_cuda_selector_bias.json, against the same precisions
#       in model_cuda_agreement.json);
#   3b'. MAD and Ego4D inference with bfloat16 weights, the text-to-video attention under the text's padding bias as
#       before its packed form (model_cuda_text_attention_bias.json, against model_cuda_agreement.json);
#   3c. Ego4D inference with 64 queries per forward (model_cuda_ego4d_64-queries.json), and MAD inference with
#       post-processing not overlapped with the next forward (model_cuda_no_overlap.json);
#   4. with RGNET_TRAINED_MODEL=<a saved quickstart model>: agreement of both bf16 forms and metrics of that model
#      on the synthetic test and validation videos, regenerated from RGNET_TRAINED_SEED (default 0)
#      (model_cuda_precision_trained.json);
#   5. the MAD training step and inference with cuDNN attention ruled out (model_cuda_no_cudnn_attention.json): under
#      bf16, PyTorch picks cuDNN for the retrieval encoder's biased attention, which the profile showed slow (training
#      still writes the bias out; inference does only for the windows with padded keys);
#   6. torch.compile: bf16 MAD and Ego4D NaQ training steps with a profile (model_cuda_compiled_train.json,
#      gpu_profile_compiled_train.txt), then Ego4D and MAD inference with bfloat16 weights with a profile of each
#      (model_cuda_compiled.json, gpu_profile_compiled_inference.txt);
#   7. CUDA graphs, torch.compile's `reduce-overhead` mode: the bf16 MAD training step, then Ego4D and MAD inference,
#      both bf16 forms, with 128 queries as in step 3 (model_cuda_compiled_cudagraphs.json, against step 6's files for
#      training and bfloat16 weights, step 3's eager ones for autocast).
# Logs and JSON go to benchmarks/results/, or with $OUT set (the device tool, which returns at most 8 files) to one
# archive, $OUT/gpu_check_results.tar.gz, rewritten after every step so that a run cut short keeps what it finished.
# RGNET_GPU_CHECK_STEPS picks steps, comma-separated, of: tests, benchmark, attention, agreement (3), eval_chunks
# (3a), selector_bias (3b), text_bias (3b'), ego4d_64, no_overlap (3c), trained, no_cudnn, compile, cudagraphs,
# mad_cudagraphs (2c), mad_cudagraphs_32 (2c') (default: all; e.g. two device calls under 600 s each; `cudagraphs`
# alone runs step 7; with 15 minutes of device time, `tests,mad_cudagraphs,attention,agreement` fits one call).
# RGNET_GPU_CHECK_COMPILE=0 skips the compiled runs (steps 2c, 2c', 6 and 7). RGNET_GPU_TESTS_K, a pytest `-k`
# expression, runs only the matching cases in step 1 (e.g. the cases of what changed since the last GPU run).
# Wheels in .whl/ (scripts/fetch_device_wheels.sh) are installed first, for a machine without a package index; those
# in .whl/fallback/ (pyarrow, transformers) only when the machine's own versions do not import.
# RGNET_GPU_CHECK_DRY_RUN=1 runs the same steps on the CPU, a smoke run that finds a misspelt option, a rejected
# combination, a wrong path or a crashing step before device time is spent: no wheels, nvidia-smi or CUDA check. Every
# Python command keeps each option of the GPU run, with `--device cpu --tiny` for `--device cuda`
# (benchmark_precision.py has no --tiny: `--device cpu`, the full synthetic data set), and benchmark_model.py with
# `--steps 1`, `--warmup 0` (the compiled runs keep their warm-ups) and, where the GPU command leaves them to the
# device, CUDA's choices (`--precisions fp32,bf16,bf16-weights --overlap-post-processing on`); pytest runs the same
# files and deselections with `-k` picking two fast CPU cases. The results go to a new `mktemp -d` folder under $TMPDIR
# (printed at the end; never benchmarks/results/), step 4's data set beside them (deleted at the end); with $OUT set,
# only to the archive. It takes about 6 minutes on 2 cores with inductor's cache warm, 20 or more cold, most of it
# compiling steps 6 and 7 (2 minutes with RGNET_GPU_CHECK_COMPILE=0); each benchmark run may take 1200 s, not 400.
# tests/test_gpu_check.py checks every command line of both modes against its script's parser.
set -uo pipefail
cd "$(dirname "$0")/.."
dry_run=${RGNET_GPU_CHECK_DRY_RUN:-0}
if [[ "$dry_run" != 0 && "$dry_run" != 1 ]]; then
    echo "RGNET_GPU_CHECK_DRY_RUN must be 0 or 1, got '$dry_run'" >&2
    exit 2
fi
out=benchmarks/results
if [[ -n "${OUT:-}" ]]; then
    out=/tmp/gpu_check_results
fi
synthetic=/tmp/rgnet-synthetic  # step 4's data set
if [[ "$dry_run" == 1 ]]; then
    dry_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_dry_run.XXXXXX") || exit 1
    out=$dry_dir/results
    synthetic=$dry_dir/rgnet-synthetic
    if [[ -n "${OUT:-}" ]]; then  # the archive holds the results
        trap 'rm -rf "$dry_dir"' EXIT
    else
        trap 'rm -rf "$synthetic"; echo "dry run: results in $out"' EXIT
    fi
fi
mkdir -p "$out"
archive() {  # after every step: one file for the device tool to return
    if [[ -n "${OUT:-}" ]]; then
        tar czf "$OUT/.partial.tar.gz" -C "$out" . && mv "$OUT/.partial.tar.gz" "$OUT/gpu_check_results.tar.gz"
    fi
}
all_steps=tests,benchmark,attention,agreement,eval_chunks,selector_bias,text_bias,ego4d_64,no_overlap,trained,no_cudnn,compile,cudagraphs
all_steps+=,mad_cudagraphs,mad_cudagraphs_32
steps=",${RGNET_GPU_CHECK_STEPS:-$all_steps},"
wanted() { [[ "$steps" == *",$1,"* ]]; }
IFS=, read -ra given_steps <<< "${RGNET_GPU_CHECK_STEPS:-$all_steps}"
for step in "${given_steps[@]}"; do  # a misspelt step would otherwise be skipped without a word
    if [[ ",$all_steps," != *",$step,"* ]]; then
        echo "unknown step '$step' in RGNET_GPU_CHECK_STEPS; choose from $all_steps" >&2
        exit 2
    fi
done
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python=${PYTHON:-python3}
install() { "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
imports="import datasets, evaluate, scipy, einops, accelerate, modeling_rgnet, processing_rgnet, training_rgnet"
imports+=", scripts.benchmark_model"
if [[ "$dry_run" == 0 ]]; then  # the wheels are for the GPU machine's Python
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}  # where the carried wheels go
    if compgen -G ".whl/*.whl" > /dev/null; then
        install .whl/*.whl || exit 1
    fi
    if ! "$python" -c "$imports" && compgen -G ".whl/fallback/*.whl" > /dev/null; then
        # One fallback wheel at a time (pyarrow sorts first), until the imports work.
        for wheel in .whl/fallback/*.whl; do
            echo "installing fallback $wheel"
            install "$wheel" && "$python" -c "$imports" && break
        done
    fi
fi
{
    if [[ "$dry_run" == 1 ]]; then
        echo "dry run on the CPU (RGNET_GPU_CHECK_DRY_RUN=1): no GPU, $(nproc) CPU cores"
    else
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    fi
    "$python" -c "import torch, transformers, datasets, pyarrow; print(torch.__version__, transformers.__version__, \
datasets.__version__, pyarrow.__version__)"
} 2>&1 | tee "$out/gpu_environment.txt"
# Stop before spending device time when a package is missing.
"$python" -c "$imports" || exit 1
if [[ "$dry_run" == 0 ]]; then
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available')" || exit 1
fi
# A Python command line as the GPU run gives it -> `command`; in a dry run the same for a short run on the CPU: every
# option stays (so that each is parsed and exercised), only the device and the repetitions change, and
# benchmark_model.py gets the choices it makes by itself on CUDA (all precisions, post-processing beside the forward)
# where the GPU command leaves them to the device.
on_device() {
    command=("$@")
    [[ "$dry_run" == 1 ]] || return 0
    local script=$1 compiled=0 argument
    [[ " $* " == *" --compile "* ]] && compiled=1
    command=("$script")
    shift
    while (($# > 0)); do
        argument=$1
        shift
        case "$script:$argument" in
            *benchmark_precision.py:--device) command+=(--device cpu); shift ;;
            *:--device) command+=(--device cpu --tiny); shift ;;
            *benchmark_model.py:--steps) command+=(--steps 1); shift ;;
            *benchmark_model.py:--warmup)  # the compiled runs keep theirs: each compiled call of the GPU run is made
                if ((compiled)); then command+=(--warmup "$1"); else command+=(--warmup 0); fi
                shift
                ;;
            *) command+=("$argument") ;;
        esac
    done
    if [[ "$script" == *benchmark_model.py ]]; then
        ((compiled)) || [[ " ${command[*]} " == *" --warmup "* ]] || command+=(--warmup 0)
        [[ " ${command[*]} " == *" --precisions "* ]] || command+=(--precisions fp32,bf16,bf16-weights)
        [[ " ${command[*]} " == *" --overlap-post-processing "* ]] || command+=(--overlap-post-processing on)
    fi
}
step_timeout=400
if [[ "$dry_run" == 1 ]]; then
    step_timeout=1200  # inductor compiles for minutes on a small CPU
fi
status=0
archive
if wanted tests; then
    # The CPU cases of the inductor compile tests are left to the CPU machine (each compiles for about a minute).
    selection=()
    if [[ -n "${RGNET_GPU_TESTS_K:-}" ]]; then  # a part of the test files (pytest's -k), where device time is short
        selection=(-k "$RGNET_GPU_TESTS_K")
    elif [[ "$dry_run" == 1 ]]; then
        selection=(-k "eval_outputs_match_the_cpu_reference or gradients_without_dropout_match_the_cpu_reference")
    fi
    timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/test_devices.py tests/test_modeling_rgnet.py \
        tests/test_modeling_rgnet_fast_paths.py \
        --deselect "tests/test_devices.py::test_compiled_training_step_matches_eager[cpu-inductor]" \
        --deselect "tests/test_devices.py::test_compiled_top_k_window_inference_matches_eager[cpu-inductor]" \
        "${selection[@]}" 2>&1 | tee "$out/gpu_tests.log" || status=1
    archive
fi
benchmark() {  # each run at most ${RGNET_STEP_TIMEOUT:-400} s, so that a hung one leaves the later ones their time
    on_device scripts/benchmark_model.py --device cuda "$@"
    timeout "${RGNET_STEP_TIMEOUT:-$step_timeout}" "$python" "${command[@]}" 2>&1 \
        | tee -a "$out/gpu_benchmark.log" || status=1
    archive
}
if wanted benchmark; then
    benchmark --steps 5 --warmup 2 --output "$out/model_cuda.json"
fi
if wanted attention; then  # the encoder attention: its selector bias written out, factored, and bias-free (seconds)
    for precision in bf16 fp32; do
        on_device scripts/benchmark_attention.py --device cuda --precision "$precision" \
            --output "$out/attention_cuda_$precision.json"
        timeout 120 "$python" "${command[@]}" 2>&1 | tee -a "$out/gpu_benchmark.log" || status=1
    done
    archive
fi
# Agreement: 128 queries per video, one forward per 16 queries (16 × 75 MAD windows = 1,200 pairs).
many_queries=(--pipelines shared_windows --inference-queries 128 --queries-per-batch 16 --inference-chunk-pairs 1200)
# The MAD target's figure (steps 2c, 2c'): bfloat16 weights, compiled with CUDA graphs.
mad_cudagraphs=(--compile --compile-mode reduce-overhead --workloads mad-inference --precisions bf16-weights --steps 3
    --warmup 2)
if wanted mad_cudagraphs && [[ "${RGNET_GPU_CHECK_COMPILE:-1}" != 0 ]]; then  # profiled
    benchmark "${mad_cudagraphs[@]}" "${many_queries[@]}" --profile "$out/gpu_profile_mad_cudagraphs.txt" \
        --output "$out/model_cuda_mad_cudagraphs.json"
fi
if wanted mad_cudagraphs_32 && [[ "${RGNET_GPU_CHECK_COMPILE:-1}" != 0 ]]; then  # 32 queries per forward
    benchmark "${mad_cudagraphs[@]}" --pipelines shared_windows --inference-queries 128 --queries-per-batch 32 \
        --inference-chunk-pairs 2400 --output "$out/model_cuda_mad_cudagraphs_32-queries.json"
fi
if wanted agreement; then
    benchmark --workloads mad-inference,ego4d-inference "${many_queries[@]}" --steps 3 --profile "$out/gpu_profile.txt" \
        --output "$out/model_cuda_agreement.json"
fi
if wanted eval_chunks; then  # as evaluation runs by default: whole queries within its frame budget per forward
    benchmark --workloads mad-inference,ego4d-inference --pipelines shared_windows --inference-queries 128 \
        --evaluation-chunks --precisions fp32,bf16-weights --steps 3 --output "$out/model_cuda_evaluation_chunks.json"
fi
if wanted selector_bias; then  # the same with the selector bias written out: what the factored attention saves
    benchmark --workloads mad-inference,ego4d-inference "${many_queries[@]}" --precisions bf16-weights,fp32 \
        --selector-bias --steps 3 --output "$out/model_cuda_selector_bias.json"
fi
if wanted text_bias; then  # the text-to-video attention under the padding bias: what packing the text keys saves
    benchmark --workloads mad-inference,ego4d-inference "${many_queries[@]}" --precisions bf16-weights \
        --text-attention-bias --steps 3 --output "$out/model_cuda_text_attention_bias.json"
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
    "$python" scripts/make_synthetic_dataset.py --seed "${RGNET_TRAINED_SEED:-0}" --output "$synthetic" \
        --no-progress --reuse 2>&1 | tee -a "$out/gpu_benchmark.log" || status=1
    on_device scripts/benchmark_precision.py --model_dir "$RGNET_TRAINED_MODEL" \
        --dataset_dir "$synthetic" --split test,validation --device cuda \
        --output "$out/model_cuda_precision_trained.json"
    timeout 300 "$python" "${command[@]}" 2>&1 | tee -a "$out/gpu_benchmark.log" || status=1
    archive
elif wanted trained; then
    echo "skipping step 4 (trained): RGNET_TRAINED_MODEL is not set"
fi
if wanted no_cudnn; then
    benchmark --workloads mad-train,mad-inference,ego4d-inference "${many_queries[@]}" \
        --sdpa-backends flash,efficient,math --steps 3 --output "$out/model_cuda_no_cudnn_attention.json"
fi
if [[ "${RGNET_GPU_CHECK_COMPILE:-1}" == 0 ]]; then  # the compiled runs take minutes
    exit $status
fi
if wanted compile; then
    # Training first: an eager step is bound by launching its ~3,100 operators; the profile counts the compiled step's.
    # bf16 only: on the H200 compiling MAD's bf16 and fp32 steps took over 3 minutes (fp32 measured 0.088 s).
    benchmark --compile --workloads mad-train,ego4d-pretrain-train --precisions bf16 --steps 5 --warmup 2 \
        --profile "$out/gpu_profile_compiled_train.txt" --output "$out/model_cuda_compiled_train.json"
    # Inference with bfloat16 weights, the fastest eager form, with a profile of each compiled pipeline's kernels.
    benchmark --compile --workloads ego4d-inference,mad-inference "${many_queries[@]}" --precisions bf16-weights \
        --steps 3 --warmup 2 --profile "$out/gpu_profile_compiled_inference.txt" \
        --output "$out/model_cuda_compiled.json"
fi
if wanted cudagraphs; then
    # The compiled code replayed as CUDA graphs (cudagraph trees, one graph per segment between the model's graph
    # breaks; each is recorded at its second call, in the warm-up). Training runs bf16 only (bf16-weights is inference's).
    benchmark --compile --compile-mode reduce-overhead --workloads mad-train,ego4d-inference,mad-inference \
        "${many_queries[@]}" --precisions bf16,bf16-weights --steps 3 --warmup 2 \
        --output "$out/model_cuda_compiled_cudagraphs.json"
fi
exit $status
