"""Evaluate a trained RGNet on a dataset split by full long-video inference.

Usage:
    python scripts/evaluate_rgnet.py --model runs/rgnet-mad --dataset_dir data/mad --split test --output_dir eval/
    python scripts/evaluate_rgnet.py ... --device cuda --dtype bfloat16 --torch_compile   # for a GPU

Writes `metrics.json` (Recall@K at temporal IoU, mIoU for the Ego4D conventions, window recall) and
`predictions.jsonl` (one row per query: `query_id`, `video_id`, `predicted_times` as ranked
`[start, end, proposal, match, fusion]` rows in seconds — the original MAD output format — and `window_ranking`).
An earlier evaluation's files in `--output_dir` are replaced (a log line names them).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from data_rgnet import load_rgnet_dataset  # noqa: E402
from processing_rgnet import RGNetProcessor  # noqa: E402
from scripts.cli import (  # noqa: E402
    add_device_argument,
    check_device_argument,
    load_rgnet_config,
    load_rgnet_model,
    prepare_output_dir,
    run_script,
    script_parser,
)
from training_rgnet import (  # noqa: E402
    COMPILE_MODES,
    check_dataset_matches_config,
    predict_long_videos,
    retain_freed_host_memory,
    score_predictions,
)

logger = logging.getLogger("evaluate_rgnet")


def main(argv: list[str] | None = None) -> dict:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--model",
        required=True,
        help="a saved model folder: the trainer's (model + processor), or a converted or save_pretrained one",
    )
    parser.add_argument("--dataset_dir", required=True, help="dataset folder in the project's layout")
    parser.add_argument("--split", default="test", help="query table to evaluate (default: test)")
    parser.add_argument("--output_dir", required=True, help="folder for metrics.json and predictions.jsonl")
    parser.add_argument(
        "--metric_config",
        choices=("auto", "mad", "ego4d"),
        default="auto",
        help="metric conventions (default auto: the model's query_normalization)",
    )
    parser.add_argument(
        "--pairs_per_batch",
        type=int,
        default=None,
        help="(query, window) pairs per forward pass, whole queries (default: as many windows as hold 256 × 900 "
        "frames on a CPU, 256 MAD windows or 2,560 Ego4D windows of 90 frames; on a GPU 1,296 × 900 frames, fewer "
        "where half its free memory holds fewer)",
    )
    parser.add_argument(
        "--max_predictions", type=int, default=None, help="moments kept per query (default: the processor's setting)"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the weights' dtype: bfloat16 halves the memory traffic of inference on a GPU; with the quickstart's "
        "trained model it ranked the same moment first as float32 for 124 of 124 queries (benchmarks/README.md); "
        "anchors, heads and spans are computed in float32 (from the bfloat16-rounded weights)",
    )
    parser.add_argument(
        "--torch_compile",
        action="store_true",
        help="torch.compile the model, with dynamic shapes (videos differ in length): the first chunks compile, "
        "which takes minutes; for long evaluations on a GPU",
    )
    parser.add_argument(
        "--torch_compile_backend", default="inductor", help="torch.compile backend with --torch_compile"
    )
    parser.add_argument(
        "--torch_compile_mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile mode with --torch_compile (`default`: none given). `reduce-overhead` (and `max-autotune`) "
        "records CUDA graphs on a GPU, replayed with fewer kernel launches; with dynamic shapes each distinct input "
        "shape (pairs per forward, which varies with the videos' window counts) records its own graph, which costs "
        "recording time and memory per shape. On the CPU inductor records none: the mode only matters on a GPU",
    )
    parser.add_argument(
        "--retain_freed_cpu_memory",
        action="store_true",
        help="keep freed memory in the process for reuse (glibc): on the CPU each forward then stops faulting its "
        "activations in again (MAD inference about 13%% faster on the project's 2-core VM, the same peak memory)",
    )
    args = parser.parse_args(argv)
    # Flags are checked before anything is loaded.
    if args.torch_compile_mode != "default" and not args.torch_compile:
        parser.error(f"--torch_compile_mode {args.torch_compile_mode} needs --torch_compile")
    if args.torch_compile_mode != "default" and args.torch_compile_backend != "inductor":
        parser.error(
            f"--torch_compile_mode is an inductor option; --torch_compile_backend is {args.torch_compile_backend}"
        )
    if args.pairs_per_batch is not None and args.pairs_per_batch < 1:
        parser.error(f"--pairs_per_batch must be >= 1, got {args.pairs_per_batch}")
    if args.max_predictions is not None and args.max_predictions < 1:
        parser.error(
            f"--max_predictions must be >= 1 (or left out for the model's default), got {args.max_predictions}"
        )
    check_device_argument(parser, args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.retain_freed_cpu_memory and not retain_freed_host_memory():
        logger.warning("--retain_freed_cpu_memory: this C library cannot be tuned (glibc only); ignored.")

    # The model folder and the data are checked against each other before the weights load and the videos are
    # evaluated, and the output folder is made: an unusable one must not cost a long run.
    config = load_rgnet_config(args.model)
    queries, store = load_rgnet_dataset(args.dataset_dir)
    if args.split not in queries:
        parser.error(f"--split {args.split!r} is not in the dataset; it has {sorted(queries)}")
    table = queries[args.split]
    check_dataset_matches_config(table, store, config, flags=False)
    output_dir = prepare_output_dir(args.output_dir)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = load_rgnet_model(args.model, dtype=dtype).to(args.device).eval()
    if args.torch_compile:
        # With CUDA graphs each forward's replay overwrites the outputs of the one before: `predict_long_videos`
        # copies them to the CPU first (`forward_whole_queries`).
        mode = None if args.torch_compile_mode == "default" else args.torch_compile_mode
        model = torch.compile(model, backend=args.torch_compile_backend, dynamic=True, mode=mode)
    processor = RGNetProcessor.from_model_folder(args.model, model.config)
    predictions = predict_long_videos(
        model, processor, table, store, pairs_per_batch=args.pairs_per_batch, max_predictions=args.max_predictions
    )
    for name in ("predictions.jsonl", "metrics.json"):
        if (output_dir / name).exists():  # a re-run into the same folder: said, not silent
            logger.info("replacing the earlier %s", output_dir / name)
    with (output_dir / "predictions.jsonl").open("w") as handle:
        for item in predictions:
            row = {
                "query_id": item["query_id"],
                "video_id": item["video_id"],
                "predicted_times": item["predictions"],
                "window_ranking": item["window_ranking"],
            }
            handle.write(json.dumps(row) + "\n")
    metric_config = args.metric_config
    if metric_config == "auto":
        metric_config = "mad" if model.config.query_normalization == "mad" else "ego4d"
    metrics = {}
    if any(timestamps is not None for timestamps in table["timestamps"]):
        metrics = score_predictions(predictions, table, processor, metric_config)
    else:
        logger.warning("Split %r has no timestamps: predictions written, no metrics.", args.split)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for key, value in metrics.items():
        logger.info("%s = %s", key, value)
    return metrics


if __name__ == "__main__":
    run_script(main)
