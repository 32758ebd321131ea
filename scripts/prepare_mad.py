"""Convert the MAD dataset into an RGNet dataset directory (see `data_rgnet.py` for the layout).

Two sources are accepted:

* the official MAD release: one annotation JSON per split (`query_id -> {sentence, movie, movie_duration,
  timestamps}`), the frame features `CLIP_B32_frames_features_5fps.h5` (one `(T, 512)` dataset per movie id) and,
  optionally, the query token features `CLIP_B32_language_tokens_features.h5` (one `(Lt, 512)` dataset per query
  id, stored unchanged; without it the rows hold only the text, for on-the-fly tokenisation);
* with `--original-layout`: the original implementation's JSON Lines annotations plus LMDB feature stores
  (`--video-lmdb`, optional `--text-lmdb`; spec §9).

Query rows follow spec §9.1 (`query_id` = annotation key, `query` = sentence, `video_id` = `clip_id` = movie,
`duration` = movie_duration, `timestamps` = [start, end] seconds). Filters and counted decisions are those of
`data_rgnet.clean_query_row` (training splits: drop start < 0, start >= duration, start == end); the counts per
reason are logged and written to `conversion_summary.json` in the output directory (and to `--summary`).

Example:

```
python scripts/prepare_mad.py --annotations train=MAD_train.json --annotations val=MAD_val.json \\
    --annotations test=MAD_test.json --video-features CLIP_B32_frames_features_5fps.h5 \\
    --text-features CLIP_B32_language_tokens_features.h5 --output data/mad
```
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
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

logger = logging.getLogger("prepare_mad")

MAD_SECONDS_PER_FRAME = 0.2
MAD_ANNOTATION_KEYS = ("sentence", "movie", "movie_duration")


def mad_annotation_rows(path: str | Path) -> list[dict[str, Any]]:
    """Query rows of one official MAD annotation JSON, before filtering.

    Args:
        path (`str` or `Path`): JSON object `query_id -> {sentence, movie, movie_duration, timestamps}`.

    Returns:
        `list[dict]`: Rows with `query_id`, `query`, `video_id`, `clip_id`, `duration`, `timestamps` (None when the
        entry has none).

    Raises:
        ValueError: If the file is not a JSON object of objects or an entry misses a key.
    """
    data = read_json(path, "--annotations")
    if not isinstance(data, dict):
        raise ValueError(f"MAD annotation file {str(path)!r} must hold a JSON object query_id -> entry.")
    rows = []
    for query_id, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {query_id!r} must be an object, got {type(entry).__name__}.")
        missing = [key for key in MAD_ANNOTATION_KEYS if key not in entry]
        if missing:
            raise ValueError(f"{path}: entry {query_id!r} misses key(s) {missing}.")
        rows.append(
            {
                "query_id": str(query_id),
                "query": entry["sentence"] if entry["sentence"] is not None else "",
                "video_id": str(entry["movie"]),
                "clip_id": str(entry["movie"]),
                "duration": entry["movie_duration"],
                "timestamps": entry.get("timestamps"),
            }
        )
    return rows


def convert_mad_release(
    annotations: dict[str, Path],
    video_features: Path,
    output_dir: Path,
    *,
    text_features: Path | None = None,
    train_splits: list[str] | None = None,
    strict: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert the official MAD release (annotation JSONs + CLIP h5 files).

    Args:
        annotations (`dict[str, Path]`): Annotation JSON per split.
        video_features (`Path`): `CLIP_B32_frames_features_5fps.h5`.
        output_dir (`Path`): Dataset directory to create.
        text_features (`Path`, *optional*): `CLIP_B32_language_tokens_features.h5`.
        train_splits, strict, max_shard_bytes, overwrite, progress: See `data_rgnet.build_rgnet_dataset`.

    Returns:
        `dict`: The conversion summary.
    """
    rows_by_split = {split: mad_annotation_rows(path) for split, path in annotations.items()}
    with contextlib.ExitStack() as files:
        video_file = files.enter_context(_open_h5(video_features, "video_features"))
        text_file = files.enter_context(_open_h5(text_features, "text_features")) if text_features else None

        def load_video(movie: str) -> np.ndarray:
            return _read_h5_array(video_file, movie, "video_features")

        def load_text(query_id: str) -> dict[str, np.ndarray]:
            return {"text_features": _read_h5_array(text_file, query_id, "text_features")}

        return build_rgnet_dataset(
            output_dir,
            rows_by_split,
            dataset="mad",
            video_ids=set(video_file.keys()),
            load_video=load_video,
            text_ids=set(text_file.keys()) if text_file is not None else None,
            load_text=load_text if text_file is not None else None,
            train_splits=train_splits,
            strict=strict,
            metadata={
                "dataset": "mad",
                "source": "mad-release",
                "seconds_per_frame": MAD_SECONDS_PER_FRAME,
                "video_features": video_features.name,
                "text_features": text_features.name if text_features is not None else None,
            },
            max_shard_bytes=max_shard_bytes,
            overwrite=overwrite,
            progress=progress,
        )


def _read_h5_array(file, key: str, name: str) -> np.ndarray:
    """The array stored under `key`, or a ValueError naming the argument when the entry is not an array (a group)."""
    import h5py

    entry = file[key]
    if not isinstance(entry, h5py.Dataset):
        raise ValueError(f"`{name}` {file.filename!r}: entry {key!r} is a {type(entry).__name__}, not an array.")
    return np.asarray(entry[()])


def _open_h5(path: Path, name: str):
    """`h5py.File(path)` for reading, or a ValueError naming the argument when it is not a readable HDF5 file."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"`{name}` {str(path)!r} is not a readable HDF5 file ({error}).") from error


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = script_parser(__doc__)
    add_converter_arguments(parser, source="MAD JSON")
    parser.add_argument("--video-features", type=Path, help="CLIP_B32_frames_features_5fps.h5 (MAD release).")
    parser.add_argument(
        "--text-features",
        type=Path,
        help="CLIP_B32_language_tokens_features.h5 (MAD release): the queries' token features, which a model without "
        "a text encoder needs (optional).",
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the converter; returns the conversion summary."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    annotations, common = converter_options(args, parser)
    if args.original_layout:
        if args.video_features or args.text_features:
            parser.error("--video-features/--text-features belong to the MAD release, not --original-layout.")
        summary = convert_original_layout(
            annotations,
            args.video_lmdb,
            args.output,
            dataset="mad",
            text_lmdb=args.text_lmdb,
            metadata={"seconds_per_frame": MAD_SECONDS_PER_FRAME},
            **common,
        )
    else:
        if args.video_features is None:
            parser.error("--video-features is required (or use --original-layout).")
        if args.video_lmdb or args.text_lmdb:
            parser.error("--video-lmdb/--text-lmdb need --original-layout.")
        summary = convert_mad_release(
            annotations, args.video_features, args.output, text_features=args.text_features, **common
        )
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["build_parser", "convert_mad_release", "mad_annotation_rows", "main"]


if __name__ == "__main__":
    run_script(main, errors=(ValueError, OSError))
