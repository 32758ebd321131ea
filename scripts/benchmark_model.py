"""Benchmark RGNet training steps and long-video inference: speed, peak memory, reduced-precision agreement.

Workloads (the shapes of `shared/docs/benchmarks.md`, random weights, synthetic inputs shaped like the real data):

* `mad-train`: MAD preset, 8 queries in `cross_pairs` → 64 (query, window) pairs of 900 frames, 25 tokens;
* `ego4d-pretrain-train`: Ego4D NaQ pretraining preset, 16 queries → 256 pairs of 90 frames;
* `ego4d-finetune-train`: Ego4D NLQ finetuning preset, 32 positive + 32 paired negative windows;
* `mad-inference`: every window (75) of a MAD-like movie of 33,300 frames (111 minutes at 5 fps) per query: the
  original's measured "2-hour movie" had 75 windows per query, as the speed target states (a full 2 hours, 36,000
  frames, has 81);
* `ego4d-inference`: every window (21) of an 8-minute Ego4D-like clip (900 frames) per query.

A training step is forward + loss + backward + gradient clipping (0.1) + AdamW (fused, as the Trainer runs it).
`cross_pairs` steps decode only the `B` positive pairs (`grounding_pair_index`, the other pairs only feed the
retrieval loss) unless `--ground-all-pairs`. Inference runs the whole pipeline per video: windows and pairs → model
(eval, whole queries in `--inference-chunk-pairs` pairs per forward, decoding only each query's `top_k_windows` best
windows unless `--ground-all-windows`) → `processor.post_process_video_grounding` (window top-k, matching score,
fusion, NMS), reporting each stage (`prepare_s`, `model_s`, `post_process_s`; `video_prepare_s`, the share of the
first that sends and cuts the video once, and on CUDA the video's upload timed alone from pageable and from page-locked
memory), through two routes (`--pipelines`): `processor`, the processor's `__call__`
(every window repeated for every query, all of it sent to the device), and `shared_windows`, as `predict_long_videos`
runs it: each window cut and sent once per video and each query held once (`video_pair_index`, `text_pair_index`),
post-processed per group of queries (on a worker thread beside the next forward on CUDA). With both `fp32`
and a reduced precision in `--precisions` (`bf16`: bf16 autocast; `bf16-weights`: the model cast to bfloat16, for
inference), the report gives the fraction of queries that keep their top-1 moment under it
(`top1_agreement`: the same window and decoder slot ranked first, temporal IoU ≥ 0.9; target ≥ 0.99; use
`--inference-queries 100` or more). With random weights a window's proposals score almost equally, so this counts
near-ties too; `scripts/benchmark_precision.py` measures it on a trained model.

Peak memory: `torch.cuda.max_memory_allocated` on CUDA; on CPU the process's peak resident set (`VmHWM`, reset
before each measurement through `/proc/self/clear_refs`; the process-wide maximum where that is not available).

CPU allocator: glibc unmaps every freed block above 32 MB, so each training step faults its large activations in
again (about a quarter of a MAD step on the 2-core VM). `--cpu-allocator retain` keeps freed memory in the heap
(`training_rgnet.retain_freed_host_memory`, the training option `retain_freed_cpu_memory`) at the price of a
higher resident set; both are reported.

Writes `benchmarks/results/model_<device-kind>.json` unless `--output` is given: `model_<device-kind>_<workloads>.json`
when only some workloads run, `..._malloc-retain.json` with `--cpu-allocator retain`. `--tiny` needs `--output`.

Examples:

```
python scripts/benchmark_model.py --device cpu --workloads mad-train --steps 2
python scripts/benchmark_model.py --device cpu --workloads mad-train --steps 4 --cpu-allocator retain
python scripts/benchmark_model.py --device cuda                        # every workload, every precision
python scripts/benchmark_model.py --device cuda --workloads mad-inference --inference-queries 128
python scripts/benchmark_model.py --device cuda --compile --compile-mode reduce-overhead --warmup 2  # CUDA graphs
python scripts/benchmark_model.py --tiny --output /tmp/benchmark.json  # seconds-long smoke run
```
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.autograd.profiler_util import EventList
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import transformers  # noqa: E402

from configuration_rgnet import RGNetConfig  # noqa: E402
from modeling_rgnet import RGNetForVideoGrounding  # noqa: E402
from processing_rgnet import (  # noqa: E402
    RGNetProcessor,
    compute_num_windows,
    copy_to_device,
    count_pairs,
    frame_query_similarities,
)
from scripts.benchmark_data import cpu_model  # noqa: E402
from scripts.cli import check_device_argument, check_report_paths, require_output_for_smoke_runs, script_parser  # noqa: E402
from training_rgnet import (  # noqa: E402
    COMPILE_MODES,
    PostProcessingWorker,
    default_pairs_per_batch,
    forward_whole_queries,
    retain_freed_host_memory,
)


@dataclass(frozen=True)
class Workload:
    """One benchmark: a preset, a batch shape and, for inference, a video length."""

    kind: str  # "train" or "inference"
    preset: str
    num_queries: int  # training: B; inference: queries per video (0 = device default)
    batch_mode: str | None = None
    num_video_frames: int = 0


WORKLOADS = {
    "mad-train": Workload("train", "mad", 8, "cross_pairs"),
    "ego4d-pretrain-train": Workload("train", "ego4d-naq-pretrain", 16, "cross_pairs"),
    "ego4d-finetune-train": Workload("train", "ego4d-nlq-finetune", 32, "paired_negative"),
    # 75 windows, the number per query of the original's measurement (`ORIGINAL_REFERENCE`): the longest such video.
    "mad-inference": Workload("inference", "mad", 0, num_video_frames=33_300),
    "ego4d-inference": Workload("inference", "ego4d-nlq-finetune", 0, num_video_frames=900),
}
TINY_WORKLOADS = {
    "mad-train": Workload("train", "mad", 3, "cross_pairs"),
    "ego4d-pretrain-train": Workload("train", "ego4d-naq-pretrain", 3, "cross_pairs"),
    "ego4d-finetune-train": Workload("train", "ego4d-nlq-finetune", 3, "paired_negative"),
    "mad-inference": Workload("inference", "mad", 2, num_video_frames=40),
    "ego4d-inference": Workload("inference", "ego4d-nlq-finetune", 2, num_video_frames=30),
}
TINY_OVERRIDES = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_text_to_video_layers": 1,
    "num_encoder_layers": 1,
    "num_decoder_layers": 2,
    "num_moment_queries": 3,
    "ffn_dim": 64,
    "video_feature_dim": 16,
    "pooled_text_dim": 16,
    "text_feature_dim": 24,
    "max_window_frames": 12,
    "window_stride": 6,
    "max_text_tokens": 5,
    "top_k_windows": 3,
}

# The original implementation's figures (shared/docs/benchmarks.md: H200 GPU, 2-core CPU), for the ratios.
ORIGINAL_REFERENCE = {
    "mad-train": {
        "gpu": "NVIDIA H200",
        "gpu_step_s": 0.217,
        "gpu_peak_gb": 17.4,
        "cpu_step_s": 55.1,
        "cpu_peak_gb": 22.2,
    },
    "ego4d-pretrain-train": {"gpu": "NVIDIA H200", "gpu_step_s": 0.125, "gpu_peak_gb": 70.3, "cpu_step_s": 8.1},
    "ego4d-finetune-train": {"gpu": "NVIDIA H200", "gpu_step_s": 0.149, "gpu_peak_gb": 1.4, "cpu_step_s": 1.9},
    "mad-inference": {
        "gpu": "NVIDIA H200",
        "gpu_s_per_query": (1.19 + 0.18) / 8,
        "cpu_forward_s_per_query": 13.2,
        "num_windows": 75,
    },
    "ego4d-inference": {
        "gpu": "NVIDIA H200",
        "gpu_s_per_query": (0.19 + 0.09) / 8,
        "cpu_forward_s_per_query": 0.16,
        "num_windows": 21,
    },
}
TARGETS = {
    "cpu_mad_train_step_s": 55.1 / 3,
    "cpu_mad_train_peak_gb": 8.0,
    "gpu_train_pairs_per_s_vs_original": 3.0,
    "gpu_mad_train_peak_gb": 6.0,
    "gpu_ego4d_pretrain_peak_gb": 10.0,
    "gpu_inference_queries_per_s_vs_original": 40.0,
    "bf16_top1_agreement": 0.99,
}


# ---- Machine and memory ----


def device_kind(device: torch.device) -> str:
    """`cpu`, or the GPU's name as a file-name slug (`nvidia-h100-80gb-hbm3`)."""
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def environment_info(device: torch.device) -> dict[str, Any]:
    """Device, library versions and CPU settings for the report."""
    info = {
        "device": str(device),
        "device_kind": device_kind(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            cuda=torch.version.cuda,
            gpu_memory_gb=round(properties.total_memory / 1e9, 2),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def _release_host_memory() -> None:
    gc.collect()
    try:  # glibc only: hand freed heap pages back so the next peak starts from the live set
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a code block: CUDA allocated bytes, or the process's resident set on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = None

    def __enter__(self):
        _release_host_memory()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.method = "VmHWM" if _reset_peak_rss() else "ru_maxrss (process-wide, not reset)"
            self.start_bytes = _current_rss()
        return self

    def __exit__(self, *exc):
        self.reserved_bytes = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.reserved_bytes = torch.cuda.max_memory_reserved(self.device)
        else:
            self.peak_bytes = _peak_rss()
        return False

    def report(self) -> dict[str, Any]:
        report = {
            "peak_memory_gb": round(self.peak_bytes / 1e9, 3),
            "memory_at_start_gb": round(self.start_bytes / 1e9, 3),
            "peak_memory_method": self.method,
        }
        if self.reserved_bytes is not None:
            report["peak_reserved_gb"] = round(self.reserved_bytes / 1e9, 3)
        return report


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _current_rss() -> int:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else 0


def _peak_rss() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:  # ru_maxrss is KiB on Linux, bytes on macOS
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1 if sys.platform != "darwin" else 1024)
    return kib * 1024


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# `bf16`: float32 weights under bf16 autocast; `bf16-weights`: the model cast to bfloat16 (as loaded with
# `from_pretrained(..., dtype=torch.bfloat16)`), no autocast: no casts at run time and half the activation traffic.
# Its heads, anchors and spans still compute in float32. Inference only (training keeps float32 master weights).
PRECISIONS = ("fp32", "bf16", "bf16-weights")
INFERENCE_ONLY_PRECISIONS = ("bf16-weights",)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _timing(seconds: list[float]) -> dict[str, Any]:
    return {
        "times_s": [round(value, 4) for value in seconds],
        "median_s": round(float(np.median(seconds)), 4),
        "min_s": round(float(np.min(seconds)), 4),
    }


# ---- Synthetic inputs ----


def build_config(workload: Workload, tiny: bool) -> RGNetConfig:
    return RGNetConfig.from_preset(workload.preset, **(TINY_OVERRIDES if tiny else {}))


def _text_queries(config: RGNetConfig, num_queries: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Raw token features of `num_queries` queries, lengths between a third of the limit and the limit."""
    limit = config.max_text_tokens
    lengths = torch.randint(max(1, limit // 3), limit + 1, (num_queries,), generator=generator)
    lengths[0] = limit
    return [torch.randn(int(length), config.text_feature_dim, generator=generator) for length in lengths]


def training_batch(config: RGNetConfig, workload: Workload, generator: torch.Generator) -> dict[str, Any]:
    """A `cross_pairs` or `paired_negative` batch with labels, laid out as `RGNetDataCollator` does."""
    num_queries, num_frames = workload.num_queries, config.max_window_frames
    num_windows = num_queries if workload.batch_mode == "cross_pairs" else 2 * num_queries
    lengths = torch.full((num_windows,), num_frames)
    lengths[-1] = max(1, (2 * num_frames) // 3)  # a truncated window at the end of a video
    video_mask = (torch.arange(num_frames)[None] < lengths[:, None]).float()
    windows = (
        torch.randn(num_windows, num_frames, config.video_feature_dim, generator=generator) * video_mask[..., None]
    )
    processor = RGNetProcessor.from_config(config)
    queries = processor.prepare_queries(text_features=_text_queries(config, num_queries, generator))
    text, text_mask = queries["text_features"], queries["text_mask"]
    if workload.batch_mode == "cross_pairs":
        query_of_pair = torch.arange(num_queries).repeat_interleave(num_queries)
        window_of_pair = torch.arange(num_queries).repeat(num_queries)
    else:
        query_of_pair = torch.arange(num_queries).repeat(2)
        window_of_pair = torch.arange(2 * num_queries)
    positive_lengths = lengths[:num_queries]
    centers = 0.2 + 0.6 * torch.rand(num_queries, generator=generator)
    widths = 0.05 + 0.25 * torch.rand(num_queries, generator=generator)
    inside = (centers * positive_lengths).long().clamp(max=positive_lengths - 1)
    outside = torch.where(inside > 0, torch.zeros_like(inside), positive_lengths - 1)
    labels = {
        "batch_mode": workload.batch_mode,
        "spans": torch.stack([centers, widths], dim=1),
        "saliency_positive_frames": inside[:, None],
        "saliency_negative_frames": outside[:, None],
    }
    pair_video = (  # cross pairs: each window once, as the collator holds them
        {"video_features": windows, "video_mask": video_mask, "video_pair_index": window_of_pair}
        if workload.batch_mode == "cross_pairs"
        else {"video_features": windows[window_of_pair], "video_mask": video_mask[window_of_pair]}
    )
    return {
        **pair_video,
        "text_features": text[query_of_pair],
        "text_mask": text_mask[query_of_pair],
        "labels": labels,
    }


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device)
        elif isinstance(value, dict):
            moved[key] = _to_device(value, device)
        else:
            moved[key] = value
    return moved


# ---- torch.compile ----

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that record CUDA graphs (on CUDA)


def compile_model(module: torch.nn.Module, args: argparse.Namespace):
    """`torch.compile` with static shapes and `--compile-mode` (`default`: no mode, torch.compile's default)."""
    return torch.compile(module, dynamic=False, mode=None if args.compile_mode == "default" else args.compile_mode)


def records_cuda_graphs(args: argparse.Namespace) -> bool:
    return args.compile and args.compile_mode in CUDA_GRAPH_MODES


def release_cuda_graphs(args: argparse.Namespace) -> None:
    """After a measurement with CUDA graphs: drop the compiled code and the recorded graphs (`torch._dynamo.reset`),
    whose memory pool would otherwise stay allocated through the next measurements and count in their memory."""
    if records_cuda_graphs(args):
        torch._dynamo.reset()


def _cudagraph_skips() -> int:
    """Compiled graphs so far that inductor ran without a CUDA graph although the mode asked for one (its reason is
    logged with `TORCH_LOGS=cudagraphs`, or `perf_hints` in older PyTorch; on the CPU every graph counts)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


# ---- Training ----


class OperatorCounter(TorchDispatchMode):
    """Counts the operators dispatched inside the block, views and uninitialised allocations excluded: on a GPU each
    is (at least) one kernel launch, the cost that bounds a training step there (about 4,000 launches for 31 ms of
    GPU work in the MAD step on an H100)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in ("empty", "empty_strided", "empty_like"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_step_operators(model, batch, grounding_pair_index, device, precision) -> dict[str, int]:
    """Operators of one training step (optimizer excluded), and of its loss alone (forward and backward).

    The loss runs the same code on every device, so its counts hold for a GPU too; the model's differ on a CPU,
    whose dropout and attention have their own kernels.
    """
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with OperatorCounter() as model_forward, _autocast(device, precision):
        outputs = model(**inputs, grounding_pair_index=grounding_pair_index)
    pair_mask = batch["video_mask"]
    if "video_pair_index" in batch:
        pair_mask = pair_mask[batch["video_pair_index"]]
    with OperatorCounter() as loss_forward:
        loss, _, _ = model.criterion(outputs, batch["labels"], video_mask=pair_mask)
    read = [outputs.logits, outputs.pred_spans, outputs.window_logits, outputs.saliency_scores]
    read += [tensor for layer in outputs.auxiliary_outputs for tensor in layer.values()]
    with OperatorCounter() as loss_backward:  # the loss's own backward: gradients of the outputs it reads
        gradients = torch.autograd.grad(loss, read, retain_graph=True, allow_unused=True)
    del gradients
    with OperatorCounter() as backward:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {
        "step_forward_and_backward": model_forward.count + loss_forward.count + backward.count,
        "loss_forward": loss_forward.count,
        "loss_backward": loss_backward.count,
    }


_LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
_GRAPH_LAUNCHES = ("cudaGraphLaunch", "cuGraphLaunch")  # a recorded CUDA graph replayed: its kernels in one launch
# Profiler records of ATen operators that launch no kernel: views, metadata, allocations, host reads.
_NO_KERNEL = {
    "aten::" + name
    for name in (
        "view _unsafe_view reshape select slice unsqueeze squeeze expand as_strided t transpose permute detach alias "
        "unbind split chunk narrow flatten unflatten contiguous empty empty_strided empty_like lift_fresh "
        "resolve_conj resolve_neg is_nonzero item _local_scalar_dense result_type to _to_copy"
    ).split()
}


def _profile_once(run, device: torch.device, record_shapes: bool = False) -> torch.profiler.profile:
    """`torch.profiler` over one call of `run` (host and, on CUDA, device activity), the device synchronised."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    _synchronize(device)
    with torch.profiler.profile(activities=activities, record_shapes=record_shapes) as profiler:
        run()
        _synchronize(device)
    return profiler


def count_compiled_step_kernels(step, device: torch.device) -> dict[str, int]:
    """Kernels of one compiled training step (optimizer included), from `torch.profiler`: on CUDA the kernel
    launches, and the CUDA graph launches (`--compile-mode reduce-overhead`: a replayed graph's kernels are not counted
    among the kernel launches); on the CPU the kernels inductor generated (`graph_*_cpp_fused_*`, profiled with
    `cpp.enable_kernel_profile`) and the outermost ATen operators that compute something (the matrix products, the
    eager loss and optimizer), each at least one launch on a GPU: a lower bound (a composite operator counts once).
    Inside a view or a cast (`aten::to`), the copy counts."""
    events = _profile_once(step, device).events()
    if device.type == "cuda":
        return {
            "compiled_step_kernel_launches": sum(event.name in _LAUNCHES for event in events),
            "compiled_step_graph_launches": sum(event.name in _GRAPH_LAUNCHES for event in events),
        }

    def outermost(event) -> bool:  # not inside a generated kernel or another computing operator
        parent = event.cpu_parent
        while parent is not None:
            if "cpp_fused" in parent.name or (parent.name.startswith("aten::") and parent.name not in _NO_KERNEL):
                return False
            parent = parent.cpu_parent
        return True

    generated = sum("cpp_fused" in event.name for event in events)  # `graph_<n>_cpp_fused_<ops>_<k>`
    operators = sum(
        event.name.startswith("aten::") and event.name not in _NO_KERNEL and outermost(event) for event in events
    )
    return {"compiled_step_generated_kernels": generated, "compiled_step_operators": operators}


def benchmark_training(
    workload: Workload, config: RGNetConfig, device: torch.device, precision: str, args: argparse.Namespace
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    batch = _to_device(training_batch(config, workload, generator), device)
    num_pairs, num_queries = count_pairs(batch), workload.num_queries
    grounding_pair_index = None
    if workload.batch_mode == "cross_pairs" and not args.ground_all_pairs:
        grounding_pair_index = torch.arange(num_queries, device=device) * (num_queries + 1)
    model = RGNetForVideoGrounding(config).to(device).train()
    # Fused AdamW, as `RGNetTrainer` runs it (transformers' default optimizer `adamw_torch_fused` with torch >= 2.8).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
    if args.compile:  # the warm-up steps compile (and with CUDA graphs, record them: give --warmup >= 2)
        model = compile_model(model, args)
    # Compiled for the CPU, the generated kernels record themselves in torch.profiler (`count_compiled_step_kernels`);
    # the setting applies while the warm-up steps compile, not to later compilations in this process.
    kernel_profile = {"cpp.enable_kernel_profile": True} if args.compile and device.type == "cpu" else {}

    # CUDA graphs (`--compile-mode reduce-overhead`): a replay overwrites the outputs of the one before, gradients
    # included when the compiled backward allocated them. A step reads its own outputs only: the loss (computed
    # eagerly) as a float, the gradients (set to None before each backward, so never accumulated into a replayed
    # graph's output) by the clipping and the optimizer. Cudagraph trees start a new generation at each call of the
    # compiled model once the step before ran its backward, so `torch.compiler.cudagraph_mark_step_begin` is not
    # called: after one call of it, generations advance only at its calls, which the inference workloads later in
    # this process (`forward_whole_queries`) do not make.
    def step() -> float:
        with _autocast(device, precision):
            outputs = model(**batch, grounding_pair_index=grounding_pair_index)
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        return outputs.loss.item()

    losses, seconds = [], []
    skips = _cudagraph_skips()
    with torch._inductor.config.patch(kernel_profile), PeakMemory(device) as memory:
        for index in range(args.warmup + args.steps):
            _synchronize(device)
            start = time.perf_counter()
            loss = step()
            _synchronize(device)
            if index >= args.warmup:
                seconds.append(time.perf_counter() - start)
                losses.append(round(loss, 4))
    skips = _cudagraph_skips() - skips
    if args.profile:
        _write_profile(args.profile, f"{workload.preset} training step, {precision}", device, step)
    if args.compile:
        operators = count_compiled_step_kernels(step, device)
    else:
        operators = count_step_operators(model, batch, grounding_pair_index, device, precision)
    median = float(np.median(seconds))
    result = {
        "num_pairs": num_pairs,
        "num_queries": num_queries,
        "frames_per_window": config.max_window_frames,
        "grounded_pairs": num_pairs if grounding_pair_index is None else len(grounding_pair_index),
        **_timing(seconds),
        "pairs_per_s": round(num_pairs / median, 3),
        "queries_per_s": round(num_queries / median, 3),
        "losses": losses,
        **memory.report(),
        "operators": operators,
    }
    if records_cuda_graphs(args):
        result["cudagraph_skips"] = skips
    return result


# ---- Inference ----


def inference_inputs(config: RGNetConfig, workload: Workload, num_queries: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(workload.num_video_frames, config.video_feature_dim, generator=generator)
    texts = _text_queries(config, num_queries, generator)
    sentence_embeddings = torch.randn(num_queries, config.video_feature_dim, generator=generator)
    return video, texts, sentence_embeddings


def _forward_in_chunks(model, batch, num_windows, device, precision, args) -> dict[str, Any]:
    """The outputs post-processing reads for a query-major batch, gathered on the CPU: `forward_whole_queries` with
    `args.chunk_pairs // num_windows` queries per forward (at least one), grounding only each query's
    `args.top_k_windows` best windows unless `args.ground_all_windows`."""
    with torch.no_grad(), _autocast(device, precision):
        return forward_whole_queries(
            model,
            batch,
            num_windows,
            queries_per_forward=args.chunk_pairs // num_windows,
            top_k_windows=None if args.ground_all_windows else args.top_k_windows,
        )


PIPELINE_STAGES = ("prepare_s", "model_s", "post_process_s")  # they add up to a pipeline run's time


def time_video_upload(video: torch.Tensor, device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Seconds to send the video's frames to `device`, each until the device has them: with `.to` (from pageable
    memory) and with `copy_to_device` (through page-locked memory, as the pipelines send them), the median of
    `repeats` sends after a first one, reported too (where `copy_to_device` allocates its page-locked buffer)."""
    senders = {
        "upload_pageable": lambda: video.to(device),
        "upload_copy_to_device": lambda: copy_to_device(video, device),
    }
    timings = {}
    for name, send in senders.items():
        seconds = []
        for _ in range(1 + repeats):
            _synchronize(device)
            start = time.perf_counter()
            sent = send()
            _synchronize(device)
            seconds.append(time.perf_counter() - start)
            del sent
        timings[f"{name}_first_s"] = round(seconds[0], 5)
        timings[f"{name}_s"] = round(float(np.median(seconds[1:])), 5)
    return timings


class _StageClock:
    """Seconds spent in each stage of the inference pipeline, synchronising the device at every boundary."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, dict.fromkeys(PIPELINE_STAGES, 0.0)
        _synchronize(device)
        self.last = time.perf_counter()

    def lap(self, stage: str) -> float:
        """Count the seconds since the last lap to `stage`, and return them."""
        _synchronize(self.device)
        now, last = time.perf_counter(), self.last
        self.seconds[stage] += now - last
        self.last = now
        return now - last


def run_processor_pipeline(model, processor, video, texts, embeddings, device, precision, args):
    """Per group of queries: `processor(...)` (every window repeated for every query) → model → post-processing."""
    clock, results = _StageClock(device), []
    for first in range(0, len(texts), args.queries_per_batch):
        group = slice(first, first + args.queries_per_batch)
        inputs = processor(text_features=texts[group], video_features=video)
        clock.lap("prepare_s")
        tensors = {key: value.to(device) for key, value in inputs.items()}
        outputs = _forward_in_chunks(model, tensors, inputs.window_metadata.num_windows, device, precision, args)
        clock.lap("model_s")
        results += processor.post_process_video_grounding(
            outputs, inputs.window_metadata, video_features=video, sentence_embeddings=embeddings[group]
        )
        clock.lap("post_process_s")
    return results, clock.seconds, inputs.window_metadata.num_windows


def run_shared_windows_pipeline(model, processor, video, texts, embeddings, device, precision, args):
    """The processor's windows cut and sent to the device once per video (`video_pair_index`), then per group of
    queries: the model and the matching score's frame-query product on the device (`model_s`), then post-processing
    (`post_process_s`). With `args.overlap_post_processing` (as `predict_long_videos` on an accelerator) it runs on a
    worker thread while the device computes the next group, and `post_process_s` counts only the host's waits for it
    (before handing over the next group, and for the last one)."""
    clock, results = _StageClock(device), []
    # The video crosses once, as `predict_long_videos` sends it; its windows are cut there, each once (W, Lv, Dv).
    device_video = copy_to_device(video, device)
    video_windows = processor.cut_windows(device_video, device=device)
    video_prepare_s = clock.lap("prepare_s")  # part of `prepare_s`, reported on its own too
    with PostProcessingWorker(background=args.overlap_post_processing) as worker:
        for first in range(0, len(texts), args.queries_per_batch):
            group = slice(first, first + args.queries_per_batch)
            inputs = processor(  # each window and each query once, as predict_long_videos runs them
                video_windows=video_windows, text_features=texts[group], share_windows=True, share_queries=True
            )
            clock.lap("prepare_s")
            outputs = _forward_in_chunks(model, inputs, video_windows.num_windows, device, precision, args)
            similarities = frame_query_similarities(device_video, embeddings[group])  # (T, group)
            similarities = copy_to_device(similarities, "cpu")
            clock.lap("model_s")
            finished = worker.submit(
                None,
                processor.post_process_video_grounding,
                outputs,
                inputs.window_metadata,
                frame_similarities=similarities,
            )
            results += [result for _, processed in finished for result in processed]
            clock.lap("post_process_s")
        results += [result for _, processed in worker.finish() for result in processed]
    clock.lap("post_process_s")
    return results, {**clock.seconds, "video_prepare_s": video_prepare_s}, video_windows.num_windows


PIPELINES = {"processor": run_processor_pipeline, "shared_windows": run_shared_windows_pipeline}


def benchmark_inference(
    workload: Workload, config: RGNetConfig, device: torch.device, precisions: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    num_queries = args.inference_queries or workload.num_queries or (8 if device.type == "cuda" else 1)
    processor = RGNetProcessor.from_config(config)
    if args.evaluation_chunks:  # as `predict_long_videos` by default: one group per forward of whole queries
        num_windows = compute_num_windows(workload.num_video_frames, processor.window_stride)
        budget = default_pairs_per_batch(config.max_window_frames, device) // num_windows
        args.queries_per_batch = max(1, min(num_queries, budget))
        args.chunk_pairs = args.queries_per_batch * num_windows
    else:
        args.chunk_pairs = args.inference_chunk_pairs or (1024 if device.type == "cuda" else 16)
    if not isinstance(args.overlap_post_processing, bool):  # `auto`: where predict_long_videos overlaps
        args.overlap_post_processing = {"on": True, "off": False}.get(
            args.overlap_post_processing, device.type != "cpu"
        )
    torch.manual_seed(args.seed)
    model = RGNetForVideoGrounding(config).to(device).eval()
    model.model.factored_selector_attention = not args.selector_bias
    model.model.packed_text_attention = not args.text_attention_bias
    models = {precision: model for precision in precisions}
    if "bf16-weights" in precisions:  # the same weights, rounded to bfloat16
        models["bf16-weights"] = copy.deepcopy(model).to(torch.bfloat16)
    # The warm-up passes compile (one graph per pair count, so keep the groups equal) and, with CUDA graphs, record
    # them. `forward_whole_queries` copies each forward's outputs to the CPU before the next forward, whose replay
    # overwrites them; each call of the compiled model starts a new replay generation (no backward is pending).
    skips = _cudagraph_skips()
    if args.compile:
        compiled = {id(module): compile_model(module, args) for module in models.values()}
        models = {precision: compiled[id(module)] for precision, module in models.items()}
    args.top_k_windows = processor.top_k_windows
    video, texts, embeddings = inference_inputs(config, workload, num_queries, args.seed)
    # The video's frames cross once per video; on CUDA, how long that takes each way (`video_prepare_s` holds it).
    upload = time_video_upload(video, device) if device.type == "cuda" else {}
    result: dict[str, Any] = {
        "num_queries": num_queries,
        "num_video_frames": workload.num_video_frames,
        "queries_per_batch": args.queries_per_batch,
        "chunk_pairs": args.chunk_pairs,
        "evaluation_chunks": args.evaluation_chunks,
        "top_k_windows_grounded": None if args.ground_all_windows else args.top_k_windows,
        "overlap_post_processing": args.overlap_post_processing,
        "compiled": args.compile,
        "compile_mode": args.compile_mode,
        **upload,
    }
    top1_moments: dict[tuple[str, str], list] = {}
    for pipeline in args.pipelines:
        for precision in precisions:
            runs = []
            with PeakMemory(device) as memory:
                for index in range(args.warmup + args.steps):
                    results, stages, num_windows = PIPELINES[pipeline](
                        models[precision], processor, video, texts, embeddings, device, precision, args
                    )
                    if index >= args.warmup:
                        runs.append({**stages, "total_s": sum(stages[name] for name in PIPELINE_STAGES)})
            top1_moments[pipeline, precision] = [top1(query) for query in results]
            total = [run["total_s"] for run in runs]
            median = float(np.median(total))
            model_s = float(np.median([run["model_s"] for run in runs]))
            result.update(num_windows=num_windows, num_pairs=num_windows * num_queries)
            result[f"{pipeline}_{precision}"] = {
                **_timing(total),
                **{
                    name: round(float(np.median([run[name] for run in runs])), 4)
                    for name in (*PIPELINE_STAGES, "video_prepare_s")
                    if name in runs[0]
                },
                "queries_per_s": round(num_queries / median, 4),
                "s_per_query": round(median / num_queries, 5),
                "pairs_per_s_model": round(num_windows * num_queries / model_s, 2),
                **memory.report(),
            }

    if args.profile:  # one more pass of the last pipeline and precision, under the profiler
        _write_profile(
            args.profile,
            f"{workload.preset}: {args.pipelines[-1]} pipeline, {precisions[-1]}, {num_queries} queries",
            device,
            partial(
                PIPELINES[args.pipelines[-1]],
                models[precisions[-1]],
                processor,
                video,
                texts,
                embeddings,
                device,
                precisions[-1],
                args,
            ),
        )

    def agreement(first, second):
        return top1_agreement(top1_moments[first], top1_moments[second])

    for pipeline in args.pipelines:  # reduced precision against fp32 (target: >= 0.99 kept)
        for precision in precisions:
            if precision != "fp32" and (pipeline, "fp32") in top1_moments:
                result[f"{pipeline}_{precision}_top1_agreement"] = agreement((pipeline, "fp32"), (pipeline, precision))
    if len(args.pipelines) == 2:  # the two pipelines compute the same predictions
        result["pipelines_top1_agreement"] = {
            precision: agreement((args.pipelines[0], precision), (args.pipelines[1], precision))
            for precision in precisions
        }
    if records_cuda_graphs(args):
        result["cudagraph_skips"] = _cudagraph_skips() - skips
    del model, models
    return result


def _write_profile(path: Path, title: str, device: torch.device, run) -> None:
    """Append torch.profiler tables of one call of `run`: operators by device time (CUDA) and by CPU time, with the
    number of kernel launches (a CPU-bound GPU step shows many launches and little device time), then the attention
    operators by input shape (which of the model's attentions each kernel's time belongs to)."""
    profiler = _profile_once(run, device, record_shapes=True)
    events = profiler.key_averages()
    launches = sum(event.count for event in events if event.key in _LAUNCHES)
    graph_launches = sum(event.count for event in events if event.key in _GRAPH_LAUNCHES)
    time_column = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    attention = EventList(
        event for event in profiler.key_averages(group_by_input_shape=True) if "attention" in event.key
    )
    with path.open("a") as file:
        file.write(f"== {title}: {launches} kernel launches, {graph_launches} CUDA graph launches\n")
        if device.type == "cuda":
            file.write(events.table(sort_by="self_device_time_total", row_limit=30) + "\n")
        file.write(events.table(sort_by="self_cpu_time_total", row_limit=30) + "\n")
        file.write(f"-- attention operators by input shape ({title})\n")
        file.write(attention.table(sort_by=time_column, row_limit=20) + "\n")


def top1(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """A query's first moment: its seconds, its source `[window, slot]`, and the top-ranked window, from a
    post-processing result (tensors) or a `predict_long_videos` record (lists); `None` without predictions."""
    if not len(result["predictions"]):
        return None
    return {
        "span": [float(value) for value in result["predictions"][0][:2]],
        "source": [int(value) for value in result["prediction_sources"][0]],
        "window": int(result["window_ranking"][0]),
    }


def _temporal_iou(first: list[float], second: list[float]) -> float:
    intersection = max(0.0, min(first[1], second[1]) - max(first[0], second[0]))
    union = max(first[1], second[1]) - min(first[0], second[0])
    return 1.0 if union == 0 else intersection / union


def top1_agreement(reference: list, other: list, min_iou: float = 0.9) -> dict[str, Any]:
    """How often `other` keeps the top-1 prediction of `reference`, query by query.

    `fraction` counts a top-1 prediction as kept when it is the same proposal (the same window and decoder slot
    ranked first) and its seconds overlap the reference's with temporal IoU `≥ min_iou`: the seconds themselves are
    regressed values that no reduced-precision trunk reproduces bit for bit, so the exact fraction is reported
    beside it (`identical_seconds`), with the same-top-window fraction and the IoU distribution.
    """
    pairs = list(zip(reference, other, strict=True))
    if not pairs:
        raise ValueError("`top1_agreement` needs at least one query.")
    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    ious = [_temporal_iou(a["span"], b["span"]) for a, b in both]
    kept = sum(a["source"] == b["source"] and iou >= min_iou for (a, b), iou in zip(both, ious, strict=True))
    kept += sum(a is None and b is None for a, b in pairs)
    return {
        "queries": len(pairs),
        "fraction": kept / len(pairs),
        "kept": int(kept),
        "definition": f"same top-1 (window, slot) and temporal IoU >= {min_iou}",
        "same_top1_source": sum(a["source"] == b["source"] for a, b in both),
        "same_top1_window": sum(a["window"] == b["window"] for a, b in both),
        "identical_seconds": sum(a["span"] == b["span"] for a, b in both)
        + sum(a is None and b is None for a, b in pairs),
        "iou_at_least_0.5": sum(iou >= 0.5 for iou in ious),
        "iou_mean": round(float(np.mean(ious)), 4) if ious else None,
        "iou_min": round(float(np.min(ious)), 4) if ious else None,
    }


# ---- Entry point ----


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"Comma-separated subset of {', '.join(WORKLOADS)} (default: all).",
    )
    parser.add_argument("--device", default="auto", help="`cpu`, `cuda`, `cuda:1`, or `auto` (CUDA when available).")
    parser.add_argument(
        "--precisions",
        default=None,
        help="Comma-separated `fp32`, `bf16` (autocast), `bf16-weights` (the model cast to bfloat16; inference only). "
        "Default: fp32 on CPU, fp32,bf16,bf16-weights on CUDA.",
    )
    parser.add_argument("--steps", type=int, default=3, help="Timed repetitions per measurement (default 3).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed repetitions first (default 1).")
    parser.add_argument(
        "--inference-queries",
        type=int,
        default=0,
        help="Queries per inference video (default: 8 on CUDA, 1 on CPU, 2 with --tiny).",
    )
    parser.add_argument(
        "--queries-per-batch",
        type=int,
        default=None,
        help="Queries sent through the pipeline together (the processor repeats every window for each; default 8).",
    )
    parser.add_argument(
        "--inference-chunk-pairs",
        type=int,
        default=0,
        help="(query, window) pairs per inference forward, rounded down to whole queries, at least one "
        "(default: 1024 on CUDA, 16 on CPU).",
    )
    parser.add_argument(
        "--evaluation-chunks",
        action="store_true",
        help="Inference: group and forward the queries as evaluation does by default (`predict_long_videos`, "
        "`default_pairs_per_batch`: whole queries within a budget of 256 windows of 900 frames per forward on a "
        "CPU, the MAD workload's 75 windows 3 queries at a time, an Ego4D clip's 21 windows 121 at a time; on a "
        "GPU with memory to spare 1,296 windows, 17 and 617 queries) instead of --queries-per-batch and "
        "--inference-chunk-pairs.",
    )
    parser.add_argument(
        "--pipelines",
        default=",".join(PIPELINES),
        help="Inference pipelines, comma-separated: `processor` (`processor(...)` repeats every window for every "
        "query) and/or `shared_windows` (each window cut and sent once, `video_pair_index`). Default: both.",
    )
    parser.add_argument(
        "--ground-all-windows",
        action="store_true",
        help="Inference: decode every window of a query, not only the processor's `top_k_windows` best (the model's "
        "`top_k_windows`).",
    )
    parser.add_argument(
        "--selector-bias",
        action="store_true",
        help="Inference: the retrieval encoder's attention under its written-out `(pairs, S, S)` selector bias, as "
        "training runs it, instead of the factored form (`RGNetModel.factored_selector_attention`).",
    )
    parser.add_argument(
        "--text-attention-bias",
        action="store_true",
        help="Inference: the text-to-video attention under the text's padding bias instead of over each pair's real "
        "tokens packed (CUDA's variable-length flash kernel; `RGNetModel.packed_text_attention`).",
    )
    parser.add_argument(
        "--ground-all-pairs",
        action="store_true",
        help="Decode every pair of a cross_pairs training batch, not only the positives.",
    )
    parser.add_argument(
        "--sdpa-backends",
        default="",
        help="Restrict scaled_dot_product_attention to these backends, comma-separated, of flash, efficient, cudnn, "
        "math (default: PyTorch's choice; e.g. `flash,efficient,math` rules cuDNN attention out).",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads on CPU (default: unchanged).")
    parser.add_argument(
        "--cpu-allocator",
        choices=("default", "retain"),
        default="default",
        help="`retain`: glibc keeps freed memory for reuse (no mmap for large blocks, 1 GB trim threshold); see "
        "`retain_freed_host_memory`. Default: the allocator as configured by the environment.",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (training and inference; the warm-up passes compile, give --warmup >= 2).",
    )
    parser.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile's `mode` with --compile (`default`: none given). `reduce-overhead` (and `max-autotune`) "
        "records CUDA graphs on CUDA (cudagraph trees, one per compiled segment between the model's graph breaks): "
        "a step or forward then launches its recorded kernels at once instead of one by one. The first call of each "
        "shape runs the compiled code, the second records the graph, later ones replay it: give --warmup >= 2. On "
        "the CPU inductor skips CUDA graphs, so the mode only matters on a GPU. Reported with the skipped graphs "
        "(`cudagraph_skips`; on the CPU every graph) and, with --profile or a compiled training step, the CUDA "
        "graph launches.",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="Append to this file torch.profiler tables (operators by device time on CUDA and by CPU time, with the "
        "kernel launch count, then the attention operators by input shape) of one more training step per training "
        "precision and one more inference pass per inference workload (the last pipeline and precision).",
    )
    parser.add_argument(
        "--overlap-post-processing",
        choices=("auto", "on", "off"),
        default="auto",
        help="`shared_windows` pipeline: post-process each group of queries on a worker thread while the device runs "
        "the next group (`auto`: on CUDA, as `predict_long_videos` does).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="Tiny config and batches: a seconds-long smoke run.")
    parser.add_argument("--output", type=Path, default=None, help="JSON report path.")
    args = parser.parse_args(argv)
    args.workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown or not args.workloads:
        found = f"unknown workload(s) {unknown}" if unknown else "--workloads names no workload"
        parser.error(f"{found}; choose from {list(WORKLOADS)}")
    args.sdpa_backends = [name.strip() for name in args.sdpa_backends.split(",") if name.strip()]
    if set(args.sdpa_backends) - set(SDPA_BACKENDS):
        parser.error(f"--sdpa-backends must name some of {list(SDPA_BACKENDS)}")
    args.pipelines = [name.strip() for name in args.pipelines.split(",") if name.strip()]
    if not args.pipelines or set(args.pipelines) - set(PIPELINES):
        parser.error(f"--pipelines must name some of {list(PIPELINES)}")
    if args.evaluation_chunks and (args.queries_per_batch is not None or args.inference_chunk_pairs):
        parser.error(
            "--evaluation-chunks sets the query groups and forward sizes: drop --queries-per-batch and "
            "--inference-chunk-pairs"
        )
    if args.queries_per_batch is None:
        args.queries_per_batch = 8
    if args.queries_per_batch < 1:
        parser.error("--queries-per-batch must be >= 1")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    for option in ("inference_queries", "inference_chunk_pairs", "threads"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')} must be >= 0 (0: the default); got {getattr(args, option)}")
    require_output_for_smoke_runs(parser, args)
    if args.compile_mode != "default" and not args.compile:
        parser.error(f"--compile-mode {args.compile_mode} needs --compile")
    check_device_argument(parser, args.device, allow_auto=True)
    check_report_paths(parser, {"--output": args.output, "--profile": args.profile})  # before the measurements
    return args


def default_output_path(device: torch.device, workloads: list[str], allocator: str) -> Path:
    """`benchmarks/results/model_<device-kind>[_<workloads>][_malloc-retain].json`: a run of some workloads gets
    its own file, so that it cannot replace a full run's."""
    suffix = "" if workloads == list(WORKLOADS) else "_" + "_".join(workloads)
    suffix += "_malloc-retain" if allocator == "retain" else ""
    return REPO_ROOT / "benchmarks" / "results" / f"model_{device_kind(device)}{suffix}.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:  # checked by `_parse_args`
        device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = args.cpu_allocator
    if allocator == "retain" and not retain_freed_host_memory():
        allocator = "default (retain unavailable: not glibc)"
    precisions = (
        [name.strip() for name in args.precisions.split(",") if name.strip()]
        if args.precisions
        else (list(PRECISIONS) if device.type == "cuda" else ["fp32"])
    )
    if not precisions or set(precisions) - set(PRECISIONS):
        raise SystemExit(f"--precisions must name some of {', '.join(PRECISIONS)}; got {args.precisions!r}.")
    workloads = TINY_WORKLOADS if args.tiny else WORKLOADS
    report: dict[str, Any] = {
        "benchmark": "rgnet-model",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment_info(device),
        "settings": {
            "workloads": args.workloads,
            "precisions": precisions,
            "steps": args.steps,
            "warmup": args.warmup,
            "tiny": args.tiny,
            "compile": args.compile,
            "compile_mode": args.compile_mode,
            "ground_all_pairs": args.ground_all_pairs,
            "ground_all_windows": args.ground_all_windows,
            "selector_bias": args.selector_bias,
            "text_attention_bias": args.text_attention_bias,
            "sdpa_backends": args.sdpa_backends or "default",
            "cpu_allocator": allocator,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "seed": args.seed,
        },
        "original_reference": ORIGINAL_REFERENCE,
        "targets": TARGETS,
        "workloads": {},
    }
    output = args.output or default_output_path(device, args.workloads, allocator)
    output.parent.mkdir(parents=True, exist_ok=True)
    for name in args.workloads:
        with _attention_backends(args.sdpa_backends):
            report["workloads"][name] = _run_workload(name, workloads[name], device, precisions, args)
        # Written after every workload: a run stopped by a time limit keeps the workloads it finished.
        output.write_text(json.dumps(report, indent=2) + "\n")
        _release_host_memory()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[benchmark_model] wrote {output}")
    return report


SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def _attention_backends(names: list[str] | None):
    """`scaled_dot_product_attention` restricted to the named backends (`--sdpa-backends`), else PyTorch's choice."""
    return sdpa_kernel([SDPA_BACKENDS[name] for name in names]) if names else contextlib.nullcontext()


def _run_workload(name: str, workload: Workload, device: torch.device, precisions: list[str], args) -> dict[str, Any]:
    config = build_config(workload, args.tiny)
    entry: dict[str, Any] = {"kind": workload.kind, "preset": workload.preset, "config": config.to_diff_dict()}
    print(f"[benchmark_model] {name} on {device} ...", flush=True)
    if workload.kind == "train":
        entry["batch_mode"] = workload.batch_mode
        for precision in precisions:
            if precision in INFERENCE_ONLY_PRECISIONS:
                continue
            entry[precision] = benchmark_training(workload, config, device, precision, args)
            release_cuda_graphs(args)
            print(f"  {precision}: {json.dumps(entry[precision])}", flush=True)
    else:
        entry.update(benchmark_inference(workload, config, device, precisions, args))
        release_cuda_graphs(args)
        print(f"  {json.dumps({key: entry[key] for key in entry if key != 'config'})}", flush=True)
    if not args.tiny:
        entry["ratios_to_original"] = _ratios(name, entry, device)
    return entry


def _ratios(name: str, entry: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Speed-ups over the original's figures (`original_reference`); exact only on the reference hardware."""
    reference = ORIGINAL_REFERENCE[name]
    on_gpu = device.type == "cuda"
    ratios: dict[str, Any] = {"reference_device": reference["gpu"] if on_gpu else "2-core CPU"}
    if entry["kind"] == "inference":  # per query on the GPU: like for like only at the reference's window count
        ratios.update(num_windows=entry.get("num_windows"), reference_num_windows=reference["num_windows"])
    for key, measured in entry.items():
        if not isinstance(measured, dict) or "median_s" not in measured:
            continue
        if entry["kind"] == "train":
            ratios[f"{key}_step_speedup"] = round(
                reference["gpu_step_s" if on_gpu else "cpu_step_s"] / measured["median_s"], 3
            )
        elif on_gpu:
            ratios[f"{key}_queries_per_s_speedup"] = round(reference["gpu_s_per_query"] / measured["s_per_query"], 3)
        else:  # the CPU reference is the forward of one query over all its windows
            forward_s_per_query = (
                measured["model_s"] / entry["num_queries"] * reference["num_windows"] / entry["num_windows"]
            )
            ratios[f"{key}_forward_speedup"] = round(reference["cpu_forward_s_per_query"] / forward_s_per_query, 3)
    return ratios


if __name__ == "__main__":
    main()
