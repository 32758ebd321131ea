"""Reduced-precision agreement of a trained RGNet: long-video predictions in bf16 against fp32.

`scripts/benchmark_model.py` measures agreement with random weights, whose moment scores are nearly tied, so there
the fraction mostly counts near-ties that any rounding reorders. This script measures it where it matters: a trained
model (e.g. the quickstart's `<output_dir>/model`) on a dataset split in the project's layout, every query through
`predict_long_videos` (all windows of its video, full post-processing) in fp32, under bf16 autocast (`bf16`) and with
the model's weights cast to bfloat16 (`bf16-weights`, as `from_pretrained(..., dtype=torch.bfloat16)` loads it). It
reports, for each reduced precision, the top-1 agreement (`benchmark_model.top1_agreement`: the same proposal ranked
first, temporal IoU ≥ 0.9 between the two moments; the exact and IoU statistics beside it), the test metrics under
each precision, and the time of each pass.

```
python scripts/quickstart.py --output_dir runs/quickstart
python scripts/benchmark_precision.py --model_dir runs/quickstart/model --dataset_dir runs/synthetic-0 --device cuda
```
"""

from __future__ import annotations

import copy
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from datasets import concatenate_datasets

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_rgnet import load_rgnet_dataset  # noqa: E402
from processing_rgnet import RGNetProcessor  # noqa: E402
from scripts.benchmark_model import PRECISIONS, environment_info, top1, top1_agreement  # noqa: E402
from scripts.cli import check_device_argument, check_report_paths, load_rgnet_model, run_script, script_parser  # noqa: E402
from training_rgnet import predict_long_videos, score_predictions  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser(__doc__)
    parser.add_argument("--model_dir", type=Path, required=True, help="A saved RGNetForVideoGrounding + processor.")
    parser.add_argument("--dataset_dir", type=Path, required=True, help="An RGNet dataset directory.")
    parser.add_argument("--split", default="test", help="Split(s) to run, comma-separated (e.g. `test,validation`).")
    parser.add_argument(
        "--metric_config", choices=("mad", "ego4d"), default="ego4d", help="Recall@K conventions (default ego4d)."
    )
    parser.add_argument("--device", default="auto", help="`cpu`, `cuda`, or `auto` (CUDA when available).")
    parser.add_argument("--pairs_per_batch", type=int, default=1024, help="(query, window) pairs per forward.")
    parser.add_argument("--output", type=Path, default=None, help="JSON report (default: print only).")
    args = parser.parse_args(argv)
    if args.pairs_per_batch < 1:
        parser.error(f"--pairs_per_batch must be >= 1, got {args.pairs_per_batch}")
    check_device_argument(parser, args.device, allow_auto=True)
    check_report_paths(parser, {"--output": args.output})
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)

    model = load_rgnet_model(args.model_dir, "--model_dir").to(device).eval()
    processor = RGNetProcessor.from_pretrained(args.model_dir)
    queries, store = load_rgnet_dataset(args.dataset_dir)
    splits = [name.strip() for name in args.split.split(",") if name.strip()]
    missing = [name for name in splits if name not in queries]
    if not splits or missing:
        raise SystemExit(f"--split must name splits of the dataset ({sorted(queries)}), got {args.split!r}.")
    table = concatenate_datasets([queries[name] for name in splits])
    report: dict[str, Any] = {
        "benchmark": "rgnet-precision-agreement",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment_info(device),
        "model_dir": str(args.model_dir),
        "dataset_dir": str(args.dataset_dir),
        "split": splits,
        "queries": len(table),
        "videos": len(set(table["video_id"])),
    }
    top1_moments = {}
    for precision in PRECISIONS:  # fp32 first: the reference
        precision_model = copy.deepcopy(model).to(torch.bfloat16) if precision == "bf16-weights" else model
        for _ in ("warmup", "timed"):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                predictions = predict_long_videos(
                    precision_model, processor, table, store, pairs_per_batch=args.pairs_per_batch, progress=False
                )
            seconds = time.perf_counter() - start
        report[precision] = {
            "seconds": round(seconds, 3),
            "queries_per_s": round(len(table) / seconds, 2),
            "metrics": score_predictions(predictions, table, processor, args.metric_config),
        }
        top1_moments[precision] = [top1(prediction) for prediction in predictions]
    for precision in PRECISIONS[1:]:  # `bf16_top1_agreement`, `bf16_weights_top1_agreement`
        key = f"{precision.replace('-', '_')}_top1_agreement"
        report[key] = top1_agreement(top1_moments["fp32"], top1_moments[precision])
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run_script(main, errors=(ValueError, OSError))
