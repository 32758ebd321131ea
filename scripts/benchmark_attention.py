"""Time the model's masked attentions at inference: the retrieval encoder's under its selector bias, written out and
in factored form, and the text-to-video attention under the text's padding bias and packed.

The frame selector's bias (`build_selector_attention_bias`, the released checkpoints' `additive_unit_bias` mode) is
the keys' padding plus `−1` on the diagonal of every non-selected frame's row. Written out it is an `(N, 1, S, S)`
tensor that rules out the flash kernel; on an H100 PyTorch then ran cuDNN's biased kernel, which took a quarter of
MAD inference. The model's inference computes the same function without it (`selector_attention`): bias-free
attention that returns each row's log-sum-exp, then a correction of the non-selected rows,

    out_i ← (out_i − a_i v_i) / (1 − a_i),    a_i = (1 − e^{−1}) exp(s_ii − lse_i),

with the pairs whose keys are padded computed again under their bias. This script times, at one shape (default: the
MAD inference forward, 16 queries × 81 windows = 1296 pairs of 901 tokens, 8 heads of 32, each query's first and
last windows half windows), each way of computing the attention of already projected inputs:

* `selector_bias`: SDPA with the written-out bias, PyTorch's kernel choice (the model's form before; training's,
  which adds dropout);
* `selector_bias_efficient`, `selector_bias_cudnn` (CUDA): the same on one backend;
* `selector_attention`: the model's factored form (what inference runs; `selector_attention_kernel` in the report
  names the fused kernel it ran, `None` when none could and it ran the biased one);
* `padding_bias`: SDPA with the `(N, 1, 1, S)` padding bias only, broadcast over rows: another function;
* `no_bias`: SDPA without a bias (the flash kernel on CUDA): the lower bound, another function too;
* `no_bias_cudnn` (CUDA): the same on cuDNN's kernel;
* `logsumexp_flash`, `logsumexp_efficient`, `logsumexp_cudnn` (CUDA): the bias-free kernels that also return the
  log-sum-exp, called as `selector_attention` calls its kernel (it runs flash for bf16, memory-efficient for fp32;
  whether cuDNN's Hopper kernels would be faster at head width 32 is what these compare).

`max_abs_error` is each variant's distance to `selector_bias`, or for the bias-free variants to `no_bias`.

`text_to_video` times the other attention the text padding decides, at the same pairs: each window's frames (the
queries, `--frames` of them) attend to its query's tokens (at most `--text-tokens`, each query a length between a
third of that and all of it):

* `text_bias`: SDPA under the `(N, 1, 1, Lt)` padding bias, PyTorch's kernel choice (cuDNN's on an H200 in bf16);
* `text_bias_efficient`, `text_bias_cudnn`, `text_bias_math` (CUDA): the same on one backend;
* `packed_text`: `key_padding_attention`, what the model's inference runs (on CUDA in bf16 the variable-length flash
  kernel over each pair's real tokens; `packed_text_kernel` in the report says whether it could).

Its `max_abs_error` is each variant's distance to `text_bias`.

A variant the device cannot run records its error instead of a time. Writes
`benchmarks/results/attention_<device-kind>.json` unless `--output` is given.

Examples:

```
python scripts/benchmark_attention.py --device cuda                       # MAD shape, bf16
python scripts/benchmark_attention.py --device cuda --precision fp32
python scripts/benchmark_attention.py --tiny --output /tmp/attention.json  # seconds-long check on the CPU
```
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from modeling_rgnet import (  # noqa: E402
    RGNetKeyPaddingMask,
    RGNetSelectorMask,
    key_padding_attention,
    logsumexp_attention_kernel,
    padding_bias,
    selector_attention,
)
from scripts.benchmark_model import device_kind, environment_info  # noqa: E402
from scripts.cli import (  # noqa: E402
    add_device_argument,
    check_device_argument,
    check_report_paths,
    require_output_for_smoke_runs,
    script_parser,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def attention_inputs(
    num_pairs: int, num_frames: int, num_heads: int, head_dim: int, dtype, device, seed: int, windows_per_query: int
):
    """Random projected `(N, S, H·d)` queries, keys and values with `S = 1 + num_frames`, and the factored mask of a
    selector gate selecting about half the frames. Pairs run query by query over `windows_per_query` windows whose
    first and last are half windows (a long video's ends, as the processor cuts it), the frames after the half
    padded."""
    generator = torch.Generator().manual_seed(seed)
    length = 1 + num_frames
    query, key, value = (
        torch.randn(num_pairs, length, num_heads * head_dim, generator=generator).to(device, dtype) for _ in "qkv"
    )
    valid = torch.ones(num_pairs, length)
    window = torch.arange(num_pairs) % windows_per_query
    half_windows = (window == 0) | (window == windows_per_query - 1)
    valid[half_windows, 1 + num_frames // 2 :] = 0
    gate = (torch.rand(num_pairs, length, generator=generator) < 0.5).float()
    mask = RGNetSelectorMask(gate.to(device), valid.to(device), "additive_unit_bias")
    return query, key, value, mask


def text_attention_inputs(
    num_pairs: int, num_frames: int, max_tokens: int, num_heads: int, head_dim: int, dtype, device, seed: int
):
    """Random projected frame queries `(N, Lv, H·d)`, text keys and values `(N, Lt, H·d)` and the text's
    [`RGNetKeyPaddingMask`]: each pair a query of between a third of `max_tokens` and all of them, right-padded."""
    generator = torch.Generator().manual_seed(seed)
    width = num_heads * head_dim
    query = torch.randn(num_pairs, num_frames, width, generator=generator).to(device, dtype)
    key, value = (torch.randn(num_pairs, max_tokens, width, generator=generator).to(device, dtype) for _ in "kv")
    lengths = torch.randint(max(1, max_tokens // 3), max_tokens + 1, (num_pairs,), generator=generator)
    key_mask = (torch.arange(max_tokens)[None] < lengths[:, None]).float()
    return query, key, value, RGNetKeyPaddingMask(key_mask.to(device))


def _sdpa(inputs, bias, backend=None):
    """A call of SDPA on `(N, H, L, d)` `inputs` under `bias`, on `backend` if given (PyTorch's choice otherwise)."""

    def run():
        if backend is None:
            return F.scaled_dot_product_attention(*inputs, attn_mask=bias)
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(*inputs, attn_mask=bias)

    return run


def _time(run, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"median_ms": round(1e3 * statistics.median(times), 4), "min_ms": round(1e3 * min(times), 4)}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.precision]
    query, key, value, mask = attention_inputs(
        args.pairs, args.frames, args.heads, args.head_dim, dtype, device, args.seed, args.windows_per_query
    )
    # Views, as the model's attention reads them.
    split = [rearrange(x, "n l (h d) -> n h l d", h=args.heads) for x in (query, key, value)]
    selector_bias = mask.bias(dtype)  # (N, 1, S, S)
    key_bias = padding_bias(mask.sequence_mask, dtype)  # (N, 1, 1, S)

    variants = {"selector_bias": _sdpa(split, selector_bias)}
    if device.type == "cuda":
        variants["selector_bias_efficient"] = _sdpa(split, selector_bias, SDPBackend.EFFICIENT_ATTENTION)
        variants["selector_bias_cudnn"] = _sdpa(split, selector_bias, SDPBackend.CUDNN_ATTENTION)
    variants["selector_attention"] = lambda: rearrange(
        selector_attention(query, key, value, mask, args.heads), "n l (h d) -> n h l d", h=args.heads
    )
    variants["padding_bias"] = _sdpa(split, key_bias)
    variants["no_bias"] = _sdpa(split, None)
    bias_free = {"no_bias"}
    if device.type == "cuda":
        variants["no_bias_cudnn"] = _sdpa(split, None, SDPBackend.CUDNN_ATTENTION)
        aten = torch.ops.aten
        variants["logsumexp_flash"] = lambda: aten._scaled_dot_product_flash_attention(*split)[0]
        variants["logsumexp_efficient"] = lambda: aten._scaled_dot_product_efficient_attention(*split, None, True)[0]
        variants["logsumexp_cudnn"] = lambda: aten._scaled_dot_product_cudnn_attention(*split, None, True)[0]
        bias_free |= {"no_bias_cudnn", "logsumexp_flash", "logsumexp_efficient", "logsumexp_cudnn"}

    reference, bias_free_reference = variants["selector_bias"](), variants["no_bias"]()
    report = _time_variants(
        variants, {name: bias_free_reference for name in bias_free} | {"no_bias": None}, reference, device, args
    )
    text_to_video, packed_text_kernel = _text_to_video_variants(args, dtype, device)
    return {
        "benchmark": "rgnet-encoder-attention",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment_info(device),
        "settings": {
            "pairs": args.pairs,
            "windows_per_query": args.windows_per_query,
            "tokens": 1 + args.frames,
            "heads": args.heads,
            "head_dim": args.head_dim,
            "precision": args.precision,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        # The fused kernel `selector_attention` runs on the unpadded pairs while at most half the pairs are padded
        # (`None`: none fits, the biased kernel for all).
        "selector_attention_kernel": logsumexp_attention_kernel(*split),
        "padded_pairs": len(mask.padded_pairs),
        "variants": report,
        "text_tokens": args.text_tokens,
        # Whether `key_padding_attention` could run the variable-length flash kernel on these inputs.
        "packed_text_kernel": packed_text_kernel,
        "text_to_video": text_to_video,
    }


def _time_variants(variants, references, reference, device, args) -> dict[str, Any]:
    """Time each variant and measure its distance to `references.get(name, reference)` (none where that is `None`);
    a variant the device or build cannot run records its error instead."""
    report: dict[str, Any] = {}
    for name, run in variants.items():
        try:
            entry = _time(run, device, args.steps, args.warmup)
            expected = references.get(name, reference)
            if expected is not None:
                entry["max_abs_error"] = float((run().float() - expected.float()).abs().max())
        except (RuntimeError, NotImplementedError) as error:  # a kernel this device or build does not have
            entry = {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
        report[name] = entry
        print(f"  {name:26s} {entry}")
    return report


def _text_to_video_variants(args: argparse.Namespace, dtype, device: torch.device) -> tuple[dict[str, Any], bool]:
    """The text-to-video attention's timings (see the module's docstring) and whether the packed kernel ran."""
    query, key, value, mask = text_attention_inputs(
        args.pairs, args.frames, args.text_tokens, args.heads, args.head_dim, dtype, device, args.seed
    )
    split = [rearrange(x, "n l (h d) -> n h l d", h=args.heads) for x in (query, key, value)]
    bias = mask.bias(dtype)

    def packed():
        with torch.no_grad():
            return rearrange(
                key_padding_attention(query, key, value, mask, args.heads, 0.0), "n l (h d) -> n h l d", h=args.heads
            )

    variants = {"text_bias": _sdpa(split, bias)}
    if device.type == "cuda":
        variants["text_bias_efficient"] = _sdpa(split, bias, SDPBackend.EFFICIENT_ATTENTION)
        variants["text_bias_cudnn"] = _sdpa(split, bias, SDPBackend.CUDNN_ATTENTION)
        variants["text_bias_math"] = _sdpa(split, bias, SDPBackend.MATH)
    variants["packed_text"] = packed
    print("  text to video:")
    report = _time_variants(variants, {"text_bias": None}, variants["text_bias"](), device, args)
    packed_kernel = device.type == "cuda" and logsumexp_attention_kernel(*split) == "flash"
    return report, packed_kernel


# The sizes `--tiny` changes (each option given keeps its value), and their defaults otherwise.
TINY_SIZES = {"pairs": 8, "frames": 30, "steps": 2, "warmup": 1, "windows_per_query": 4, "text_tokens": 6}
DEFAULT_SIZES = {"pairs": 1296, "frames": 900, "steps": 10, "warmup": 2, "windows_per_query": 81, "text_tokens": 25}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_device_argument(parser)
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--pairs", type=int, help="(query, window) pairs (default 1296: 16 × 81 windows).")
    parser.add_argument("--frames", type=int, help="Frames per window (default 900, MAD).")
    parser.add_argument(
        "--windows-per-query",
        type=int,
        help="Windows of each query's video (default 81, a 2-hour MAD movie); its first and last are half windows.",
    )
    parser.add_argument(
        "--text-tokens", type=int, help="Most query tokens, text-to-video attention (default 25, MAD)."
    )
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--steps", type=int, help="Timed repetitions (default 10).")
    parser.add_argument("--warmup", type=int, help="Untimed repetitions first (default 2).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="8 pairs of 30 frames (4 windows per query), 6 tokens, 2 steps after 1, for each of these options not "
        "given: a seconds-long check (needs --output).",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON report path.")
    args = parser.parse_args(argv)
    for option, value in (TINY_SIZES if args.tiny else DEFAULT_SIZES).items():
        if getattr(args, option) is None:  # an option given keeps its value, even the default's
            setattr(args, option, value)
    require_output_for_smoke_runs(parser, args)
    if (
        min(args.pairs, args.frames, args.heads, args.head_dim, args.steps, args.windows_per_query, args.text_tokens)
        < 1
        or args.warmup < 0
    ):
        parser.error(
            "--pairs, --frames, --text-tokens, --heads, --head-dim, --steps and --windows-per-query must be >= 1, "
            "--warmup >= 0"
        )
    check_device_argument(parser, args.device)
    check_report_paths(parser, {"--output": args.output})
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    report = run_benchmark(args)
    kind = device_kind(torch.device(args.device))
    output = args.output or REPO_ROOT / "benchmarks" / "results" / f"attention_{kind}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
