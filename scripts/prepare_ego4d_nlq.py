"""Convert Ego4D-NLQ (v1 or v2) or NaQ annotations with EgoVLP clip features into an RGNet dataset directory.

Two sources are accepted:

* the Ego4D release: NLQ annotation JSON per split (`nlq_train.json`, `nlq_val.json`, `nlq_test_unannotated.json`;
  v1 and v2 share the schema of spec §9.1, and NaQ's augmented training JSON uses it too) plus a folder of
  EgoVLP features, one `{clip_uid}.pt` file per clip holding a torch tensor `(T, 256)`;
* with `--original-layout`: the original implementation's JSON Lines annotations plus LMDB feature stores
  (`--video-lmdb`, optional `--text-lmdb`; spec §9).

Query rows follow spec §9.1: `query_id = "{annotation_uid}_{k}"` with `k` the index in `language_queries` before
filtering; `duration = round(video_end_sec) - round(video_start_sec)` and `clip_video_start_end =
[round(video_start_sec), round(video_end_sec)]` with `round(x) = floor(x + 0.5)`; `timestamps =
[clip_start_sec, clip_end_sec]` (None in the unannotated test split). Features are per clip, so `video_id` (the
feature-store key) is the `clip_uid`, `clip_id` repeats it, and Ego4D's `video_uid` is kept in `video_uid`.
A language query without a `query` text (some v1 entries) counts as an empty query.

Filters and counted decisions are those of `data_rgnet.clean_query_row` (all splits: empty text, start == end
after rounding to 0.1 s; training splits: start >= duration * 479.895 / 480, start == end, start < 120 s and
end > duration - 60 s); the counts per reason are logged and written to `conversion_summary.json`.

Example:

```
python scripts/prepare_ego4d_nlq.py --annotations train=nlq_train.json --annotations val=nlq_val.json \\
    --annotations test=nlq_test_unannotated.json --features-dir egovlp_clip_features --output data/ego4d_nlq
python scripts/prepare_ego4d_nlq.py --annotations train=naq_nlq_train.json --features-dir egovlp_clip_features \\
    --output data/ego4d_naq
```
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_rgnet import (  # noqa: E402
    DEFAULT_MAX_SHARD_BYTES,
    add_converter_arguments,
    build_rgnet_dataset,
    convert_original_layout,
    converter_options,
    read_json,
)
from scripts.cli import run_script, script_parser  # noqa: E402

logger = logging.getLogger("prepare_ego4d_nlq")

# The recipes' frame duration (spec §2: EgoVLP features at 1.875 fps, 0.535 s per frame as used by the recipes).
EGO4D_SECONDS_PER_FRAME = 0.535
EGO4D_FEATURE_FPS = 1.875


def round_half_up(value: float) -> int:
    """Spec §9.1 rounding: `floor(value + 0.5)`."""
    return math.floor(value + 0.5)


def _require(mapping: dict, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{where}: missing key {key!r}.")
    return mapping[key]


def _require_id(mapping: dict, key: str, where: str) -> str:
    """An id field as a string; `null` or an empty id would become the id "None" or "" of every such entry."""
    value = _require(mapping, key, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise ValueError(f"{where}: `{key}` must be a non-empty string, got {value!r}.")
    return str(value)


def _optional_seconds(mapping: dict, key: str, where: str) -> float | None:
    """A moment bound: absent or `null` (a query without a moment), else a finite number of seconds."""
    if mapping.get(key) is None:
        return None
    return _require_seconds(mapping, key, where)


def _require_seconds(mapping: dict, key: str, where: str) -> float:
    value = _require(mapping, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: `{key}` must be a finite number of seconds, got {value!r}.")
    return float(value)


def ego4d_annotation_rows(path: str | Path) -> list[dict[str, Any]]:
    """Query rows of one Ego4D-NLQ (v1/v2) or NaQ annotation JSON, before filtering.

    Args:
        path (`str` or `Path`): `{"videos": [{video_uid, clips: [{clip_uid, video_start_sec, video_end_sec,
            annotations: [{annotation_uid, language_queries: [{query, clip_start_sec, clip_end_sec, ...}]}]}]}]}`.

    Returns:
        `list[dict]`: Rows with `query_id`, `query`, `video_id` (= `clip_uid`), `clip_id`, `video_uid`,
        `duration`, `timestamps` (None without `clip_start_sec`/`clip_end_sec`) and `clip_video_start_end`.

    Raises:
        ValueError: If a required key is missing, or a clip's rounded end is not after its rounded start.
    """
    return _rows_from_annotation_data(read_json(path, "--annotations"), str(path))


def _rows_from_annotation_data(data: Any, path: str) -> list[dict[str, Any]]:
    videos = _require(data, "videos", path)
    if not isinstance(videos, list):
        raise ValueError(f"{path}: `videos` must be a list.")
    rows = []
    for video in videos:
        video_uid = _require_id(video, "video_uid", f"{path}: a video")
        for clip in video.get("clips") or []:
            clip_uid = _require_id(clip, "clip_uid", f"{path}: a clip of video {video_uid!r}")
            where = f"{path}: clip {clip_uid!r}"
            video_start = round_half_up(_require_seconds(clip, "video_start_sec", where))
            video_end = round_half_up(_require_seconds(clip, "video_end_sec", where))
            if video_end <= video_start:
                raise ValueError(
                    f"{where}: rounded video_end_sec ({video_end}) must be after rounded video_start_sec "
                    f"({video_start})."
                )
            for annotation in clip.get("annotations") or []:
                annotation_uid = _require_id(annotation, "annotation_uid", f"{where}: an annotation")
                language_queries = annotation.get("language_queries") or []
                if not isinstance(language_queries, list):
                    raise ValueError(
                        f"{where}: annotation {annotation_uid!r}: `language_queries` must be a list, got "
                        f"{type(language_queries).__name__}."
                    )
                for index, language_query in enumerate(language_queries):
                    query_where = f"{where}: annotation {annotation_uid!r}: language query {index}"
                    if not isinstance(language_query, dict):
                        raise ValueError(f"{query_where} must be an object, got {language_query!r}.")
                    start = _optional_seconds(language_query, "clip_start_sec", query_where)
                    end = _optional_seconds(language_query, "clip_end_sec", query_where)
                    rows.append(
                        {
                            "query_id": f"{annotation_uid}_{index}",
                            "query": "" if language_query.get("query") is None else language_query["query"],
                            "video_id": clip_uid,
                            "clip_id": clip_uid,
                            "video_uid": video_uid,
                            "duration": float(video_end - video_start),
                            "timestamps": None if start is None or end is None else [start, end],
                            "clip_video_start_end": [float(video_start), float(video_end)],
                        }
                    )
    return rows


def load_clip_features(path: str | Path) -> np.ndarray:
    """Load one EgoVLP clip feature file (`torch.save` of a tensor `(T, D)`).

    Raises:
        ValueError: If the file cannot be read as tensor data or does not hold a tensor (the message names it).
    """
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure reads the same
        raise ValueError(f"feature file {str(path)!r} is not a readable torch tensor file: {error}") from None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"feature file {str(path)!r} holds {type(value).__name__}, expected a tensor (T, D).")
    return value.detach().to(torch.float32).numpy()


def convert_ego4d_release(
    annotations: dict[str, Path],
    features_dir: Path,
    output_dir: Path,
    *,
    train_splits: list[str] | None = None,
    strict: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert Ego4D-NLQ/NaQ annotation JSONs and per-clip EgoVLP `.pt` files.

    Args:
        annotations (`dict[str, Path]`): Annotation JSON per split.
        features_dir (`Path`): Folder of `{clip_uid}.pt` files.
        output_dir (`Path`): Dataset directory to create.
        train_splits, strict, max_shard_bytes, overwrite, progress: See `data_rgnet.build_rgnet_dataset`.

    Returns:
        `dict`: The conversion summary.

    Raises:
        ValueError: If `features_dir` is not a directory or holds no `.pt` file, or as `build_rgnet_dataset`.
    """
    if not features_dir.is_dir():
        raise ValueError(f"`features_dir` {str(features_dir)!r} is not a directory.")
    rows_by_split = {}
    versions = {}
    for split, path in annotations.items():
        data = read_json(path, "--annotations")
        versions[split] = str(data["version"]) if isinstance(data, dict) and "version" in data else None
        rows_by_split[split] = _rows_from_annotation_data(data, str(path))
        del data
    feature_files = {path.stem: path for path in features_dir.glob("*.pt")}
    if not feature_files:
        raise ValueError(f"`features_dir` {str(features_dir)!r} holds no `{{clip_uid}}.pt` feature file.")
    return build_rgnet_dataset(
        output_dir,
        rows_by_split,
        dataset="ego4d",
        video_ids=feature_files.keys(),
        load_video=lambda clip_uid: load_clip_features(feature_files[clip_uid]),
        train_splits=train_splits,
        strict=strict,
        metadata={
            "dataset": "ego4d",
            "source": "ego4d-release",
            "seconds_per_frame": EGO4D_SECONDS_PER_FRAME,
            "feature_fps": EGO4D_FEATURE_FPS,
            "annotation_versions": versions,
        },
        max_shard_bytes=max_shard_bytes,
        overwrite=overwrite,
        progress=progress,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = script_parser(__doc__)
    add_converter_arguments(parser, source="NLQ/NaQ JSON")
    parser.add_argument("--features-dir", type=Path, help="Folder of EgoVLP {clip_uid}.pt feature files.")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the converter; returns the conversion summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    annotations, common = converter_options(args, parser)
    if args.original_layout:
        if args.features_dir is not None:
            parser.error("--features-dir belongs to the Ego4D release, not --original-layout.")
        summary = convert_original_layout(
            annotations,
            args.video_lmdb,
            args.output,
            dataset="ego4d",
            text_lmdb=args.text_lmdb,
            metadata={"seconds_per_frame": EGO4D_SECONDS_PER_FRAME, "feature_fps": EGO4D_FEATURE_FPS},
            **common,
        )
    else:
        if args.features_dir is None:
            parser.error("--features-dir is required (or use --original-layout).")
        if args.video_lmdb or args.text_lmdb:
            parser.error("--video-lmdb/--text-lmdb need --original-layout.")
        summary = convert_ego4d_release(annotations, args.features_dir, args.output, **common)
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["build_parser", "convert_ego4d_release", "ego4d_annotation_rows", "load_clip_features", "main"]


if __name__ == "__main__":
    run_script(main, errors=(ValueError, OSError))
