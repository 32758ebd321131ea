"""Benchmark random window reads from an RGNet feature store (the training data path of spec §6.1).

Builds a store of several hour-long synthetic videos in a temporary directory (default: 6 videos x 18,000
frames x 512 float32, i.e. six MAD movies of one hour at 5 fps, 221 MB), then times `read_frames` of random
900-frame windows:

* `warm`: the shards are in the page cache (the steady state of a training run whose data fits in RAM);
* `cold`: before each read the kernel is asked to drop the shard files' cached pages (`posix_fadvise
  DONTNEED`), so every read goes to the storage device (the state of a data set larger than RAM);
* `datasets_video_row` (with `--compare-per-video-rows`): the rejected alternative, one `datasets` row per
  video sliced after `with_format("numpy")`, for context.

Writes a JSON report (mean/p50/p95/max ms per read, the target, library versions and the machine) to
`benchmarks/results/data_read_<hostname>.json` unless `--output` is given.

Example:

```
python scripts/benchmark_data.py --reads 300
```
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_rgnet import RGNetDatasetWriter, RGNetFeatureStore  # noqa: E402
from scripts.cli import check_report_paths, script_parser  # noqa: E402

TARGET_MS = 5.0


def timing_summary(milliseconds: list[float]) -> dict[str, float]:
    """Mean, p50, p95 and max of a list of durations in milliseconds."""
    values = np.asarray(milliseconds, dtype=np.float64)
    return {
        "reads": int(values.size),
        "mean_ms": round(float(values.mean()), 4),
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p95_ms": round(float(np.percentile(values, 95)), 4),
        "max_ms": round(float(values.max()), 4),
    }


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(work_dir: Path) -> dict[str, Any]:
    """Machine and library versions for the report."""
    import datasets

    info = {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "datasets": datasets.__version__,
        "device": "cpu (page cache / local disk)",
        "work_dir": str(work_dir),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def build_store(root: Path, *, num_videos: int, num_frames: int, feature_dim: int, seed: int) -> None:
    """Write `num_videos` random `(num_frames, feature_dim)` videos with one query each."""
    rng = np.random.default_rng(seed)
    with RGNetDatasetWriter(root, metadata={"dataset": "benchmark"}) as writer:
        for index in range(num_videos):
            video_id = f"video_{index:03d}"
            writer.add_video(video_id, rng.standard_normal((num_frames, feature_dim), dtype=np.float32))
            writer.add_query(
                "train",
                {
                    "query_id": f"q{index}",
                    "query": "synthetic",
                    "video_id": video_id,
                    "duration": num_frames * 0.2,
                    "timestamps": [1.0, 2.0],
                },
            )


def _drop_page_cache(paths: list[Path]) -> None:
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            # Dirty pages (the store was just written) are not dropped, so flush them first.
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def time_reads(root: Path, *, reads: int, window: int, seed: int, cold: bool = False) -> tuple[list[float], float]:
    """Time `reads` random window reads; returns the durations (ms) and a checksum of what was read.

    Warm reads share one store (its shards stay mapped). A cold read opens a fresh store after asking the kernel
    to drop the shards' cached pages, so the timed read includes mapping the shard and reading from storage
    (pages still mapped by a live store cannot be dropped, hence the fresh store).
    """
    rng = np.random.default_rng(seed)
    store = RGNetFeatureStore(root)
    video_ids = list(store.video_ids)
    shard_paths = sorted((root / "features").glob("shard-*.npy"))
    durations = []
    checksum = 0.0
    for _ in range(reads):
        video_id = video_ids[int(rng.integers(len(video_ids)))]
        start = int(rng.integers(0, store.num_frames(video_id) - window + 1))
        if cold:
            del store
            _drop_page_cache(shard_paths)
            store = RGNetFeatureStore(root)
        began = time.perf_counter()
        frames = store.read_frames(video_id, start, start + window)
        durations.append((time.perf_counter() - began) * 1000.0)
        checksum += float(frames[0, 0])
    return durations, checksum


def time_per_video_rows(
    root: Path, *, num_videos: int, num_frames: int, feature_dim: int, reads: int, window: int, seed: int
) -> list[float]:
    """Time window reads from the rejected layout: one `datasets` row per video (`Array2D`), sliced after reading."""
    from datasets import Array2D, Dataset, Features, Value

    rng = np.random.default_rng(seed)

    def rows():
        for index in range(num_videos):
            yield {
                "video_id": f"video_{index:03d}",
                "features": rng.standard_normal((num_frames, feature_dim), dtype=np.float32),
            }

    features = Features({"video_id": Value("string"), "features": Array2D(shape=(None, feature_dim), dtype="float32")})
    table = Dataset.from_generator(rows, features=features, writer_batch_size=1, cache_dir=str(root / "cache"))
    table.save_to_disk(str(root / "per_video_rows"))
    table = Dataset.load_from_disk(str(root / "per_video_rows")).with_format("numpy")
    durations = []
    for _ in range(reads):
        index = int(rng.integers(num_videos))
        start = int(rng.integers(0, num_frames - window + 1))
        began = time.perf_counter()
        frames = np.array(table[index]["features"][start : start + window])
        durations.append((time.perf_counter() - began) * 1000.0)
        assert frames.shape == (window, feature_dim)
    return durations


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = script_parser(__doc__)
    parser.add_argument("--num-videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=18_000, help="Frames per video (18,000 = 1 h at 5 fps).")
    parser.add_argument("--dim", type=int, default=512, help="Feature width.")
    parser.add_argument("--window", type=int, default=900, help="Frames per read (MAD window).")
    parser.add_argument(
        "--reads", type=int, default=300, help="Timed reads per mode (at most 50 for --compare-per-video-rows)."
    )
    parser.add_argument("--warmup", type=int, default=20, help="Untimed reads before the warm measurement.")
    parser.add_argument("--no-cold", action="store_true", help="Skip the cold (page cache dropped) measurement.")
    parser.add_argument(
        "--compare-per-video-rows",
        action="store_true",
        help="Also time the one-row-per-video datasets layout (builds a second copy of the data).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="Where to build the temporary store (default: system temp).")
    parser.add_argument("--output", type=Path, help="Report path (default: benchmarks/results/data_read_<host>.json).")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written as JSON)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("num_videos", "frames", "dim", "window", "reads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive.")
    if args.warmup < 0:
        parser.error("--warmup must not be negative.")
    if args.window > args.frames:
        parser.error("--window must not exceed --frames.")
    if args.work_dir is not None and not args.work_dir.is_dir():
        parser.error(f"--work-dir {str(args.work_dir)!r} is not an existing folder.")
    check_report_paths(parser, {"--output": args.output})
    output = args.output or REPO_ROOT / "benchmarks" / "results" / f"data_read_{socket.gethostname()}.json"

    with tempfile.TemporaryDirectory(prefix="rgnet_benchmark_", dir=args.work_dir) as work_dir:
        root = Path(work_dir) / "store"
        began = time.perf_counter()
        build_store(root, num_videos=args.num_videos, num_frames=args.frames, feature_dim=args.dim, seed=args.seed)
        build_seconds = time.perf_counter() - began
        # Touch every frame once so that "warm" means fully cached, then warm up the read path.
        store = RGNetFeatureStore(root)
        for video_id in store.video_ids:
            store.read_video(video_id)
        del store
        time_reads(root, reads=args.warmup, window=args.window, seed=args.seed + 1)
        warm, _ = time_reads(root, reads=args.reads, window=args.window, seed=args.seed + 2)
        results = {"warm": timing_summary(warm)}
        if not args.no_cold:
            cold, _ = time_reads(root, reads=args.reads, window=args.window, seed=args.seed + 3, cold=True)
            results["cold"] = timing_summary(cold)
        if args.compare_per_video_rows:
            per_video = time_per_video_rows(
                Path(work_dir),
                num_videos=args.num_videos,
                num_frames=args.frames,
                feature_dim=args.dim,
                reads=min(args.reads, 50),
                window=args.window,
                seed=args.seed + 4,
            )
            results["datasets_video_row"] = timing_summary(per_video)
        environment = environment_info(Path(work_dir))

    report = {
        "benchmark": "random window read, RGNetFeatureStore.read_frames",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "num_videos": args.num_videos,
            "frames_per_video": args.frames,
            "feature_dim": args.dim,
            "dtype": "float32",
            "window_frames": args.window,
            "store_megabytes": round(args.num_videos * args.frames * args.dim * 4 / 1e6, 1),
            "build_seconds": round(build_seconds, 3),
            "seed": args.seed,
        },
        "target_ms": TARGET_MS,
        "results": results,
        "meets_target": {mode: entry["mean_ms"] <= TARGET_MS for mode, entry in results.items()},
        "environment": environment,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    for mode, entry in results.items():
        print(
            f"{mode:>20}: mean {entry['mean_ms']:.3f} ms, p50 {entry['p50_ms']:.3f} ms, "
            f"p95 {entry['p95_ms']:.3f} ms over {entry['reads']} reads"
        )
    print(f"report written to {output}")
    return report


__all__ = ["build_store", "cpu_model", "main", "time_reads", "timing_summary"]


if __name__ == "__main__":
    main()
