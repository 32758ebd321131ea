"""Time the retrieval encoder's self-attention with and without its per-pair `(S, S)` selector bias.

The frame selector's bias (`build_selector_attention_bias`, the released checkpoints' `additive_unit_bias` mode) is
the keys' padding plus `−1` on the diagonal of every non-selected frame's row. Written out it is an `(N, 1, S, S)`
tensor that rules out the flash kernel; on an H100 PyTorch then runs cuDNN's biased kernel, which took a quarter of
MAD inference. The same function can be computed from attention under the padding bias alone plus its log-sum-exp:
for a non-selected row `i` with `p_ii` its weight on its own key, removing the factor `e^{−1}` from that weight gives

    out_i ← (out_i − a_i v_i) / (1 − a_i),    a_i = (1 − e^{−1}) p_ii = (1 − e^{−1}) exp(s_ii − lse_i),

with `s_ii = scale · q_i·k_i`. This script times, at one shape (default: the MAD inference forward, 16 queries × 81
windows = 1296 pairs of 901 tokens, 8 heads of 32), each way of computing the attention, and checks the corrected
output against the biased one:

* `selector_bias`: SDPA with the materialised bias, PyTorch's kernel choice (what the model runs);
* `selector_bias_efficient`, `selector_bias_cudnn` (CUDA): the same on one backend;
* `padding_bias`: SDPA with the `(N, 1, 1, S)` padding bias only, broadcast over rows;
* `no_bias`: SDPA without a bias (the flash kernel on CUDA): the lower bound, a different function when keys are
  padded;
* `diagonal_correction`: the padding-bias kernel that also returns the log-sum-exp (PyTorch's memory-efficient kernel
  on CUDA, its flash kernel on the CPU), then the correction above; `max_abs_error` against `selector_bias`.

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
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from modeling_rgnet import build_selector_attention_bias  # noqa: E402
from scripts.benchmark_model import device_kind, environment_info  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_DIAGONAL_SHRINK = 1.0 - math.exp(-1.0)  # the share of a row's own-key weight that the −1 bias removes


def attention_inputs(num_pairs: int, num_frames: int, num_heads: int, head_dim: int, dtype, device, seed: int):
    """Random `(N, H, S, d)` queries, keys and values with `S = 1 + num_frames`, a selector gate selecting about half
    the frames, and the last pair's window padded to two thirds (the end of a video)."""
    generator = torch.Generator().manual_seed(seed)
    length = 1 + num_frames
    query, key, value = (
        torch.randn(num_pairs, num_heads, length, head_dim, generator=generator).to(device, dtype) for _ in range(3)
    )
    valid = torch.ones(num_pairs, length, dtype=torch.bool)
    valid[-1, 1 + (2 * num_frames) // 3 :] = False
    gate = (torch.rand(num_pairs, length, generator=generator) < 0.5).float()
    return query, key, value, gate.to(device), valid.float().to(device)


def aligned_padding_bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`padding_bias(valid, dtype)`, `(N, 1, 1, S)`, with each pair's row stored at a multiple of 16 elements: the
    CUDA memory-efficient kernel reads a bias in place only when its strides are aligned (`scaled_dot_product_attention`
    pads a mask itself; its private operator, called here for the log-sum-exp, does not)."""
    num_pairs, length = valid.shape
    storage = torch.zeros(num_pairs, -(-length // 16) * 16, dtype=dtype, device=valid.device)
    bias = storage[:, :length]
    bias.masked_fill_(~valid.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]


def attention_with_logsumexp(query, key, value, bias):
    """`(output, lse)` of attention under an additive `bias` broadcastable to `(N, H, L, S)`; `lse` is `(N, H, L)`
    float32. PyTorch's private kernels that return it: flash on the CPU, memory-efficient on CUDA."""
    bias = bias.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    if query.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, attn_mask=bias)
    output, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, True)
    return output, lse[..., : query.shape[2]]


def diagonal_corrected_attention(query, key, value, penalised_rows, key_bias):
    """Self-attention under `key_bias` with `−1` added to the own-key logit of every row in `penalised_rows`
    (`(N, L)` bool), without writing that bias out (see the module docstring)."""
    output, lse = attention_with_logsumexp(query, key, value, key_bias)
    own_logit = (query.float() * key.float()).sum(-1) / math.sqrt(query.shape[-1])  # (N, H, L)
    removed = _DIAGONAL_SHRINK * torch.exp(own_logit - lse) * penalised_rows[:, None, :]  # a_i
    corrected = (output.float() - removed[..., None] * value.float()) / (1.0 - removed[..., None])
    return corrected.to(output.dtype)


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
    times.sort()
    return {"median_ms": round(1e3 * times[len(times) // 2], 4), "min_ms": round(1e3 * times[0], 4)}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.precision]
    query, key, value, gate, valid = attention_inputs(
        args.pairs, args.frames, args.heads, args.head_dim, dtype, device, args.seed
    )
    selector_bias = build_selector_attention_bias(gate, valid, "additive_unit_bias", dtype)  # (N, 1, S, S)
    key_bias = aligned_padding_bias(valid, dtype)  # (N, 1, 1, S)
    penalised = (gate < 0.5) & valid.bool()
    penalised[:, 0] = False  # the global token counts as selected

    def sdpa(bias, backend=None):
        def run():
            if backend is None:
                return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)

        return run

    variants = {"selector_bias": sdpa(selector_bias)}
    if device.type == "cuda":
        variants["selector_bias_efficient"] = sdpa(selector_bias, SDPBackend.EFFICIENT_ATTENTION)
        variants["selector_bias_cudnn"] = sdpa(selector_bias, SDPBackend.CUDNN_ATTENTION)
    variants["padding_bias"] = sdpa(key_bias)
    variants["no_bias"] = sdpa(None)
    variants["diagonal_correction"] = lambda: diagonal_corrected_attention(query, key, value, penalised, key_bias)

    reference = variants["selector_bias"]()
    report: dict[str, Any] = {}
    for name, run in variants.items():
        try:
            entry = _time(run, device, args.steps, args.warmup)
            if name != "no_bias":  # the others compute the model's function
                entry["max_abs_error"] = float((run().float() - reference.float()).abs().max())
        except (RuntimeError, NotImplementedError) as error:  # a kernel this device or build does not have
            entry = {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
        report[name] = entry
        print(f"  {name:26s} {entry}")
    return {
        "benchmark": "rgnet-encoder-attention",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment_info(device),
        "settings": {
            "pairs": args.pairs,
            "tokens": 1 + args.frames,
            "heads": args.heads,
            "head_dim": args.head_dim,
            "precision": args.precision,
            "steps": args.steps,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "variants": report,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--pairs", type=int, default=1296, help="(query, window) pairs (default 16 × 81 windows).")
    parser.add_argument("--frames", type=int, default=900, help="Frames per window (default 900, MAD).")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="Timed repetitions (default 10).")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="4 pairs of 31 tokens, 2 steps: a seconds-long check.")
    parser.add_argument("--output", type=Path, default=None, help="JSON report path.")
    args = parser.parse_args(argv)
    if args.tiny:
        args.pairs, args.frames, args.steps, args.warmup = 4, 30, 2, 1
    if min(args.pairs, args.frames, args.heads, args.head_dim, args.steps) < 1 or args.warmup < 0:
        parser.error("--pairs, --frames, --heads, --head-dim and --steps must be >= 1, --warmup >= 0")
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
