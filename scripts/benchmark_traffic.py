"""Count the memory traffic of RGNet inference: bytes read and written by every operator, per query.

Long-video inference on a GPU is mostly bound by memory bandwidth (hundreds of operators over `(pairs, 900, 256)`
activations and the feed-forward block's `(pairs, 900, 2048)`), so the bytes the operators move are a measure of its
cost that any machine can count, a GPU or not. One forward pass of the `shared_windows` form (each window once, a
group of queries × every window of a synthetic long video, grounding each query's `top_k_windows` best windows) runs
under a dispatch mode that records, for every ATen operator (views and allocations excluded), the bytes of its tensor
inputs and outputs and the module that ran it (gathers and row copies: the rows they move). A tensor's bytes are its
elements' bytes, capped at its storage's size (a broadcast bias is read once). Kernels read their inputs once or more:
this counts once, a lower bound per kernel. An attention kernel may read a bias broadcast over heads once per head:
`gb_per_query_bias_read_per_head` counts those reads too.

Numbers depend on which kernels the device picks: on the CPU, attention whose query/key width differs from the value
width runs PyTorch's math path (which upcasts bfloat16 and materialises scores), where CUDA runs a fused kernel.

Writes `benchmarks/results/traffic_<workload>_<precision>.json` unless `--output` is given.

Examples:

```
python scripts/benchmark_traffic.py                                    # MAD, bfloat16 weights, 4 queries
python scripts/benchmark_traffic.py --precision fp32 --workload ego4d-inference
python scripts/benchmark_traffic.py --tiny --output /tmp/traffic.json  # seconds-long smoke run
```
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from modeling_rgnet import RGNetForVideoGrounding  # noqa: E402
from processing_rgnet import RGNetProcessor  # noqa: E402
from scripts.benchmark_model import (  # noqa: E402
    TINY_WORKLOADS,
    WORKLOADS,
    build_config,
    environment_info,
    inference_inputs,
)
from scripts.cli import check_report_paths, require_output_for_smoke_runs, script_parser  # noqa: E402

INFERENCE_WORKLOADS = [name for name, workload in WORKLOADS.items() if workload.kind == "inference"]
PRECISIONS = ("fp32", "bf16", "bf16-weights")
_NOT_KERNELS = {"empty", "empty_strided", "empty_like", "new_empty", "lift_fresh", "detach", "_local_scalar_dense"}


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in `value` (any nesting): elements × element size, at most the storage's size."""
    total = 0
    for tensor in tree_leaves(value):
        if isinstance(tensor, torch.Tensor):
            total += min(tensor.numel() * tensor.element_size(), tensor.untyped_storage().nbytes())
    return total


def operator_bytes(name: str, args: tuple, kwargs: dict, output: Any) -> tuple[int, int]:
    """`(read, written)` bytes of one operator: its tensor arguments read and its outputs written whole, except for
    gathers (`index`, `index_select`, `gather`: the rows they return, plus the indices) and row copies into a tensor
    (`index_copy_`: the source rows, written in place), which touch only the rows they move."""
    if name in ("index", "index_select", "gather"):
        indices = [value for value in tree_leaves((args[1:], kwargs)) if isinstance(value, torch.Tensor)]
        moved = tensor_bytes(output)
        return moved + tensor_bytes(indices), moved
    if name == "index_copy_":
        index, source = args[2], args[3]
        return tensor_bytes(source) + tensor_bytes(index), tensor_bytes(source)
    return tensor_bytes((args, kwargs)), tensor_bytes(output)


def attention_bias_rereads(name: str, args: tuple, kwargs: dict) -> int:
    """Bytes an attention kernel reads beyond `operator_bytes` when it reads a bias broadcast over heads once per head
    (the bias's bytes × (heads − 1)); 0 for other operators. An upper bound: a cache may serve some of the reads."""
    if "scaled_dot_product" not in name:
        return 0
    bias = kwargs.get("attn_mask")
    if bias is None and len(args) > 3 and isinstance(args[3], torch.Tensor):  # efficient, cuDNN, math: 4th argument
        bias = args[3]
    query = args[0]
    if bias is None or bias.ndim != 4 or query.ndim != 4 or (bias.shape[1] != 1 and bias.stride(1) != 0):
        return 0
    return tensor_bytes(bias) * (query.shape[1] - 1)


class TrafficCounter(TorchDispatchMode):
    """Bytes read and written per ATen operator and per innermost module, inside the block.

    Module attribution uses global forward hooks, installed for the block only.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.names = {id(module): name or "(root)" for name, module in model.named_modules()}
        self.stack: list[str] = []
        self.by_operator: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # calls, read, written
        self.by_module: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # calls, bytes
        self.bias_rereads = 0  # see `attention_bias_rereads`

    def __enter__(self):
        def enter_module(module, args):
            self.stack.append(self.names.get(id(module), type(module).__name__))

        def leave_module(module, args, output):  # returns None: the module's output is left as it is
            self.stack.pop()

        self._hooks = [
            torch.nn.modules.module.register_module_forward_pre_hook(enter_module),
            torch.nn.modules.module.register_module_forward_hook(leave_module),
        ]
        return super().__enter__()

    def __exit__(self, *exc_info):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc_info)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if func.is_view or name in _NOT_KERNELS or name == "_unsafe_view":  # `_unsafe_view` aliases its input
            return output
        read, written = operator_bytes(name, args, kwargs, output)
        self.bias_rereads += attention_bias_rereads(name, args, kwargs)
        entry = self.by_operator[name]
        entry[0], entry[1], entry[2] = entry[0] + 1, entry[1] + read, entry[2] + written
        module = self.by_module[self.stack[-1] if self.stack else "(outside the model)"]
        module[0], module[1] = module[0] + 1, module[1] + read + written
        return output


def inference_batch(config, workload, num_queries: int, ground_all_windows: bool, seed: int):
    """The processor's `share_windows` batch of `num_queries` queries × every window of the workload's synthetic
    video (the text per pair, as in the measurements committed under `benchmarks/results/`)."""
    processor = RGNetProcessor.from_config(config)
    video, texts, _ = inference_inputs(config, workload, num_queries, seed)
    inputs = processor(video_features=video, text_features=texts, share_windows=True)
    batch = dict(inputs)
    if not ground_all_windows:
        pair_query = torch.from_numpy(inputs.window_metadata.pair_query_index)
        batch.update(top_k_windows=processor.top_k_windows, pair_query_index=pair_query)
    num_windows = inputs.window_metadata.num_windows
    return batch, num_windows


def _gigabytes(value: float) -> float:
    return round(value / 1e9, 4)


def count_traffic(args: argparse.Namespace) -> dict[str, Any]:
    workload = (TINY_WORKLOADS if args.tiny else WORKLOADS)[args.workload]
    config = build_config(workload, args.tiny)
    torch.manual_seed(args.seed)
    model = RGNetForVideoGrounding(config).eval()
    if args.precision == "bf16-weights":
        model = model.to(torch.bfloat16)
    batch, num_windows = inference_batch(config, workload, args.queries, args.ground_all_windows, args.seed)
    counter = TrafficCounter(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"), counter:
        model(**batch)
    per_query = 1.0 / args.queries
    operators = sorted(counter.by_operator.items(), key=lambda item: -(item[1][1] + item[1][2]))
    modules = sorted(counter.by_module.items(), key=lambda item: -item[1][1])
    total = sum(read + written for _, (_, read, written) in operators)
    return {
        "benchmark": "rgnet-inference-traffic",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment_info(torch.device("cpu")),
        "settings": {
            "workload": args.workload,
            "precision": args.precision,
            "queries_per_forward": args.queries,
            "num_windows": num_windows,
            "top_k_windows_grounded": None if args.ground_all_windows else config.top_k_windows,
            "tiny": args.tiny,
            "seed": args.seed,
        },
        "gb_per_query": _gigabytes(total * per_query),
        # With attention biases broadcast over heads read once per head: an upper bound for those kernels.
        "gb_per_query_bias_read_per_head": _gigabytes((total + counter.bias_rereads) * per_query),
        "operators_per_query": round(sum(calls for _, (calls, _, _) in operators) * per_query, 2),
        # Per forward pass (all `queries_per_forward` queries), in bytes.
        "bytes_per_forward": total,
        "by_operator": {
            name: {"calls": calls, "read_bytes": read, "written_bytes": written}
            for name, (calls, read, written) in operators
        },
        "top_modules": {
            name: {"calls": calls, "bytes": moved} for name, (calls, moved) in modules[: args.top_modules]
        },
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--workload", choices=INFERENCE_WORKLOADS, default="mad-inference")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16-weights")
    parser.add_argument("--queries", type=int, default=4, help="Queries per forward pass (default 4).")
    parser.add_argument("--ground-all-windows", action="store_true", help="Decode every window, not the top ones.")
    parser.add_argument("--top-modules", type=int, default=25, help="Modules listed in the report (default 25).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="Tiny config: a seconds-long smoke run.")
    parser.add_argument("--output", type=Path, default=None, help="JSON report path.")
    args = parser.parse_args(argv)
    if args.queries < 1:
        parser.error("--queries must be >= 1")
    if args.top_modules < 0:
        parser.error(f"--top-modules must be >= 0; got {args.top_modules}")
    require_output_for_smoke_runs(parser, args)
    check_report_paths(parser, {"--output": args.output})
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    report = count_traffic(args)
    output = args.output or REPO_ROOT / "benchmarks" / "results" / f"traffic_{args.workload}_{args.precision}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{args.workload}, {args.precision}: {report['gb_per_query']} GB per query "
        f"({report['gb_per_query_bias_read_per_head']} with attention biases read per head) "
        f"({report['operators_per_query']} operators per query); written to {output}"
    )
    per_query = args.queries * 1e9
    for name, entry in list(report["by_operator"].items())[:10]:
        moved = (entry["read_bytes"] + entry["written_bytes"]) / per_query
        print(f"  {name:45s} {entry['calls']:5d} calls  {moved:8.3f} GB per query")
    return report


if __name__ == "__main__":
    main()
