"""On-disk dataset layout for RGNet long-video grounding: query tables plus a sharded frame-feature store.

RGNet trains on random fixed-length windows (MAD: 900 frames of 512 floats) cut from hour-long videos, so the
one operation that must be cheap is "read frames `[start, end)` of video `v`". Storing each video as one row of
a `datasets` table makes every window read decode the whole video first (21-41 ms per window, measured in
`docs/environment.md`). This module therefore splits a dataset into two parts:

* **Query tables**: a `datasets.DatasetDict` keyed by split (`save_to_disk` format), one row per query, with
  the columns of spec §9.1. `datasets`' `map`/`filter`/`shuffle`/`with_format` work on them as usual.
* **Frame features**: every video's `(T, D)` float32 frames concatenated, video after video, into a few large
  `.npy` shard files (at most `max_shard_bytes` each; a video never straddles two shards). An index maps
  `video_id -> (shard, offset, num_frames)`. A window is then one contiguous byte range of one file, rows
  `[offset + start, offset + end)`, fetched with a single positional read into the returned array; nothing else
  of the video is touched. On this project's 2-core machines a random 900 x 512 window takes about 0.05 ms from
  the page cache and under 2 ms from disk (`scripts/benchmark_data.py`; a memory map faulting the same pages in
  from disk took about 6.5 ms). The shards are standard `.npy` files, so `np.load(shard, mmap_mode="r")` (or
  `RGNetFeatureStore.memmap`) gives a zero-copy view as well.

Directory layout (written by `RGNetDatasetWriter`, read by `load_rgnet_dataset`):

```
<root>/
    rgnet_dataset.json          # manifest: format name/version, feature width, shards, splits, metadata
    conversion_summary.json     # converters only: per-split input/kept counts, drops and repairs by reason
    queries/                    # DatasetDict.save_to_disk(): one folder per split
    features/
        index.json              # {"video_id": [...], "shard": [...], "offset": [...], "num_frames": [...]}
        shard-00000.npy         # float32 (sum of T over its videos, D); standard NumPy format, np.load-able
        shard-00001.npy
```

Query rows (one per query; the column types are fixed by `QUERY_COLUMN_TYPES`):

| column | type | meaning |
|---|---|---|
| `query_id` | str | unique within a split (MAD: annotation key; Ego4D: `"{annotation_uid}_{k}"`) |
| `query` | str | raw query text (normalisation of spec §2 is the processor's job) |
| `video_id` | str | **key of the feature store**: MAD movie id; Ego4D `clip_uid` (features are per clip) |
| `duration` | float | seconds of the feature sequence (Ego4D: `round(video_end) - round(video_start)`) |
| `timestamps` | [float, float] or None | `[start, end]` seconds, `start <= end`; None where unannotated (test) |
| `split` | str | the split name |
| `clip_id` | str, optional | spec §9.1 `clip_id` (MAD: movie; Ego4D: `clip_uid`) |
| `video_uid` | str, optional | Ego4D only: the source video of the clip (spec §9.1 calls it `video_id`) |
| `clip_video_start_end` | [float, float], optional | Ego4D only: `[round(video_start_sec), round(video_end_sec)]` |
| `text_features` | float32 (Lt, Dt), optional | raw token features (not L2-normalised; Lt varies per row) |
| `sentence_embedding` | float32 (Dc,), optional | raw sentence embedding (not L2-normalised) |

One deliberate difference from spec §9.1: there `video_id` is Ego4D's `video_uid`, but Ego4D features and
timestamps are per clip, so here `video_id` is the store key (`clip_uid`) and the source video is kept in
`video_uid`. For MAD both conventions coincide.

Multiprocessing: `RGNetFeatureStore` opens its file descriptors (and memory maps) lazily on first use and opens
new ones in a process whose id differs from the one that opened them (e.g. a forked `DataLoader` worker);
pickling drops them, so spawned workers work too. Reads return fresh (writable) float32 arrays.

Converters (`scripts/prepare_mad.py`, `scripts/prepare_ego4d_nlq.py`, `convert_original_layout` for the original
implementation's JSON Lines + LMDB layout of spec §9) go through `build_rgnet_dataset`, which applies the spec §9.1
filters via `clean_query_row` and counts every dropped or repaired row by reason (`ConversionStats`). Decisions
beyond spec §9.1, all counted in the summary:

* query text with nothing left after the query normalisation (empty, or only `.`, `?` and spaces, which the
  processor rejects): dropped in every split of both datasets (`empty_query`);
* reversed timestamps (`start > end`): the spec filters read the pair as given (its first value as the start, as
  the original pipeline does), then a kept pair is swapped (`swapped_timestamps`);
* training splits: after the spec filters, a start below 0 or an end beyond `duration` is clipped
  (`clipped_start_to_zero`, `clipped_end_to_duration`), and a moment that ends at or before 0 (Ego4D's filters
  keep it) is dropped (`before_video_start`); a training query without timestamps is dropped
  (`missing_timestamps`);
* evaluation splits: timestamps outside `[0, duration]` are kept unchanged, since they are the evaluation ground
  truth (`out_of_range_kept`);
* a query whose video (or, when text features are converted, whose own text features) is missing from the
  feature source is dropped (`missing_video_features`, `missing_text_features`), or raises with `strict=True`;
  a repeated `query_id` within a split keeps the first row (`duplicate_query_id`);
* non-finite features or timestamps, and malformed rows, raise `ValueError` naming the video or query.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import struct
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from datasets import Array2D, Dataset, DatasetDict, Features, List, NamedSplit, Value, load_from_disk
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


# ---- Layout constants ----

FORMAT_NAME = "rgnet-dataset"
FORMAT_VERSION = 1
MANIFEST_FILENAME = "rgnet_dataset.json"
SUMMARY_FILENAME = "conversion_summary.json"
QUERIES_DIRNAME = "queries"
FEATURES_DIRNAME = "features"
INDEX_FILENAME = "index.json"
# Present while a writer is working (and after an aborted run): such a directory may be overwritten.
INCOMPLETE_MARKER_FILENAME = ".rgnet-incomplete"
_QUERIES_TEMPORARY_DIRNAME = ".tmp-queries"
# What a writer puts in its folder (the JSON files' temporary names included): what `overwrite` deletes.
_DATASET_ENTRIES = frozenset(
    {QUERIES_DIRNAME, FEATURES_DIRNAME, INCOMPLETE_MARKER_FILENAME, _QUERIES_TEMPORARY_DIRNAME}
    | {name + suffix for name in (MANIFEST_FILENAME, SUMMARY_FILENAME) for suffix in ("", ".tmp")}
)
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
# Every shard starts with a fixed-size NumPy header (format version 1.0), written as a placeholder when the shard
# is opened and rewritten with the final row count when it is closed; 128 bytes keep the data 64-byte aligned.
_NPY_HEADER_BYTES = 128
_FEATURE_DTYPE = np.dtype("<f4")
# `datasets` accepts split names made of word characters separated by dots.
_SPLIT_NAME_PATTERN = re.compile(r"^\w+(\.\w+)*$")

# Column order and types of the query tables; `text_features` and `sentence_embedding` get their width from the
# first row of a split.
REQUIRED_QUERY_COLUMNS = ("query_id", "query", "video_id", "duration", "timestamps", "split")
QUERY_COLUMN_TYPES = {
    "query_id": Value("string"),
    "query": Value("string"),
    "video_id": Value("string"),
    "duration": Value("float64"),
    "timestamps": List(Value("float64"), length=2),
    "split": Value("string"),
    "clip_id": Value("string"),
    "video_uid": Value("string"),
    "clip_video_start_end": List(Value("float64"), length=2),
    "text_features": None,
    "sentence_embedding": None,
}

# Spec §9.1 numbers of the Ego4D training filter.
EGO4D_START_LIMIT_FRACTION = 479.895 / 480
EGO4D_NEGATIVE_WINDOW_HEAD_SECONDS = 120.0
EGO4D_NEGATIVE_WINDOW_TAIL_SECONDS = 60.0
DATASET_KINDS = ("mad", "ego4d")


# ---- Small helpers ----


def _check_split_name(split: str) -> None:
    if not isinstance(split, str) or not _SPLIT_NAME_PATTERN.match(split):
        raise ValueError(
            f"`split` must be a name made of letters, digits and underscores (dots allowed between parts), "
            f"got {split!r}."
        )


def _check_dataset_kind(dataset: str) -> None:
    if dataset not in DATASET_KINDS:
        raise ValueError(f"`dataset` must be one of {DATASET_KINDS}, got {dataset!r}.")


def default_is_train_split(split: str) -> bool:
    """Whether a split gets the training filters of spec §9.1 when no explicit list is given.

    Args:
        split (`str`): Split name.

    Returns:
        `bool`: True when the name contains `"train"` (`train`, `naq_train`, `train_aug`, ...).
    """
    return "train" in split.lower()


def _npy_header(num_rows: int, feature_dim: int) -> bytes:
    """NumPy format 1.0 header of a C-ordered little-endian float32 `(num_rows, feature_dim)` array, padded to
    exactly `_NPY_HEADER_BYTES` bytes (magic, version, header length, then the dict literal, spaces and `\\n`)."""
    body_length = _NPY_HEADER_BYTES - 10
    body = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({num_rows}, {feature_dim}), }}"
    if len(body) >= body_length:
        raise ValueError(f"Shard shape ({num_rows}, {feature_dim}) does not fit the fixed-size .npy header.")
    body = body.ljust(body_length - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_length) + body.encode("latin1")


def _as_feature_matrix(features: Any, *, name: str, owner: str) -> np.ndarray:
    """Validate a 2-D finite feature matrix and return it as C-contiguous little-endian float32."""
    array = np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"`{name}` of {owner} must be 2-D (length, dim), got shape {array.shape}.")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"`{name}` of {owner} must have at least one row and one column, got {array.shape}.")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`{name}` of {owner} must be numeric, got dtype {array.dtype}.")
    array = np.ascontiguousarray(array, dtype=_FEATURE_DTYPE)
    finite = np.isfinite(array)
    if not finite.all():
        bad_row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ValueError(f"`{name}` of {owner} contain NaN or infinite values (first bad row {bad_row}).")
    return array


def _as_span(value: Any, *, name: str, query_id: str) -> list[float] | None:
    """`[a, b]` as two finite floats, or None."""
    if value is None:
        return None
    values = None
    if not isinstance(value, (str, bytes)):
        try:
            values = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            values = None
    if values is None or values.shape != (2,):
        raise ValueError(f"`{name}` of query {query_id!r} must be a pair [start, end], got {value!r}.")
    if not np.isfinite(values).all():
        raise ValueError(f"`{name}` of query {query_id!r} must be finite, got {value!r}.")
    return [float(values[0]), float(values[1])]


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)


# ---- Query filters (spec §9.1) ----


def _empty_after_normalization(text: str, dataset: str) -> bool:
    """Whether `text` has nothing left after the dataset's query normalisation (only `.`, `?` and spaces), which
    the processor rejects: such a query could be trained on only from precomputed token features."""
    try:
        from .processing_rgnet import normalize_query
    except ImportError:
        from processing_rgnet import normalize_query
    try:
        normalize_query(text, dataset)
    except ValueError:
        return True
    return False


class FilterResult(NamedTuple):
    """Outcome of `clean_query_row`.

    Attributes:
        row (`dict` or `None`): The cleaned row, or None when the row is dropped.
        drop_reason (`str` or `None`): Why the row was dropped.
        repairs (`tuple[str, ...]`): Counted edits applied to a kept row (e.g. `"swapped_timestamps"`).
    """

    row: dict | None
    drop_reason: str | None
    repairs: tuple[str, ...]


def clean_query_row(row: Mapping[str, Any], *, dataset: str, is_train: bool) -> FilterResult:
    """Apply the spec §9.1 filters (and this package's counted decisions) to one query row.

    Order: empty text (nothing left after the query normalisation); missing timestamps (training only); Ego4D (all
    splits): start equals end after rounding both to 0.1 s (Python `round(x, 1)`); training only, MAD: start < 0,
    start >= duration, start == end; training only, Ego4D: start >= duration * 479.895 / 480, start == end,
    start < 120 s and end > duration - 60 s (no negative window). These read `[start, end]` as given; a kept
    reversed pair is then swapped. Kept training rows are clipped to `[0, duration]` (one that ends at or before 0
    is dropped as `before_video_start`); evaluation rows keep out-of-range timestamps (`out_of_range_kept`).

    Args:
        row (`Mapping`): A query row with at least `query_id`, `query`, `duration` and `timestamps`.
        dataset (`str`): `"mad"` or `"ego4d"`: which filter set applies.
        is_train (`bool`): Whether the row belongs to a training split.

    Returns:
        `FilterResult`: the cleaned row (a new dict) or None with the drop reason, and the repairs applied.

    Raises:
        ValueError: If `dataset` is unknown, the query text is not a string, or the row's duration or timestamps are
            malformed or not finite.
    """
    _check_dataset_kind(dataset)
    query_id = str(row.get("query_id"))
    text = row.get("query")
    if text is not None and not isinstance(text, str):  # said here, before the writer opens and features are written
        raise ValueError(f"`query` of query {query_id!r} must be a string, got {text!r}.")
    if text is None or _empty_after_normalization(text, dataset):
        return FilterResult(None, "empty_query", ())
    duration = row.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, (int, float, np.integer, np.floating)):
        raise ValueError(f"`duration` of query {query_id!r} must be a number, got {duration!r}.")
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"`duration` of query {query_id!r} must be finite and positive, got {duration!r}.")
    span = _as_span(row.get("timestamps"), name="timestamps", query_id=query_id)
    cleaned = dict(row)
    cleaned["duration"] = duration
    if span is None:
        if is_train:
            return FilterResult(None, "missing_timestamps", ())
        cleaned["timestamps"] = None
        return FilterResult(cleaned, None, ())

    # The spec's filters read the pair as given, its first value as the start, as the original pipeline's do.
    start, end = span
    if dataset == "ego4d" and round(start, 1) == round(end, 1):
        return FilterResult(None, "zero_length_at_0.1s", ())
    if is_train:
        if dataset == "mad":
            if start < 0:
                return FilterResult(None, "negative_start", ())
            if start >= duration:
                return FilterResult(None, "start_after_video_end", ())
            if start == end:
                return FilterResult(None, "zero_length", ())
        else:
            if start >= duration * EGO4D_START_LIMIT_FRACTION:
                return FilterResult(None, "start_after_video_end", ())
            if start == end:
                return FilterResult(None, "zero_length", ())
            if start < EGO4D_NEGATIVE_WINDOW_HEAD_SECONDS and end > duration - EGO4D_NEGATIVE_WINDOW_TAIL_SECONDS:
                return FilterResult(None, "no_negative_window", ())
    repairs = []
    if start > end:  # kept reversed pairs are swapped (training samples would swap them anyway, spec §6.1)
        start, end = end, start
        repairs.append("swapped_timestamps")
    if is_train:
        if end <= 0:  # Ego4D's filters keep moments before the clip's start; clipped, nothing would be left
            return FilterResult(None, "before_video_start", ())
        if start < 0:
            start = 0.0
            repairs.append("clipped_start_to_zero")
        if end > duration:
            end = duration
            repairs.append("clipped_end_to_duration")
    elif start < 0 or end > duration:
        repairs.append("out_of_range_kept")
    cleaned["timestamps"] = [start, end]
    return FilterResult(cleaned, None, tuple(repairs))


class ConversionStats:
    """Per-split counts of input, kept, dropped (by reason) and repaired (by kind) query rows.

    Drops keep a few example query ids per reason so that a summary points at concrete rows.

    Args:
        max_examples (`int`, *optional*, defaults to 5): Example ids kept per drop reason.
    """

    def __init__(self, max_examples: int = 5):
        self.max_examples = max_examples
        self._input: Counter = Counter()
        self._kept: Counter = Counter()
        self._dropped: dict[str, Counter] = {}
        self._repaired: dict[str, Counter] = {}
        self._examples: dict[str, dict[str, list[str]]] = {}

    def add_split(self, split: str) -> None:
        """List `split` in the summary even if it has no rows."""
        self._touch(split)

    def _touch(self, split: str) -> None:
        self._dropped.setdefault(split, Counter())
        self._repaired.setdefault(split, Counter())
        self._examples.setdefault(split, {})

    def add_input(self, split: str) -> None:
        """Count one input row of `split`."""
        self._touch(split)
        self._input[split] += 1

    def add_drop(self, split: str, reason: str, query_id: str) -> None:
        """Count one dropped row of `split` under `reason`."""
        self._touch(split)
        self._dropped[split][reason] += 1
        examples = self._examples[split].setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(str(query_id))

    def add_kept(self, split: str, repairs: Iterable[str] = ()) -> None:
        """Count one kept row of `split` and the repairs applied to it."""
        self._touch(split)
        self._kept[split] += 1
        self._repaired[split].update(repairs)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Summary `{split: {"input", "kept", "dropped": {reason: n}, "repaired": {kind: n}, "drop_examples"}}`."""
        return {
            split: {
                "input": self._input[split],
                "kept": self._kept[split],
                "dropped": dict(sorted(self._dropped[split].items())),
                "repaired": dict(sorted(self._repaired[split].items())),
                "drop_examples": {reason: list(ids) for reason, ids in sorted(self._examples[split].items())},
            }
            for split in self._dropped
        }

    def log(self) -> None:
        """Log one line per split, and a warning for every drop or repair reason with its count."""
        for split, entry in self.as_dict().items():
            logger.info("split %r: %d input rows, %d kept", split, entry["input"], entry["kept"])
            for reason, count in entry["dropped"].items():
                logger.warning(
                    "split %r: dropped %d rows (%s), e.g. %s",
                    split,
                    count,
                    reason,
                    ", ".join(entry["drop_examples"][reason]),
                )
            for kind, count in entry["repaired"].items():
                logger.warning("split %r: %d kept rows with %s", split, count, kind)


# ---- Writer ----


class VideoLocation(NamedTuple):
    """Where a video's frames live: rows `[offset, offset + num_frames)` of shard file number `shard`."""

    shard: int
    offset: int
    num_frames: int


_EXTRA_FILE_PREFIX = "extra file: "


def _extra_files(dataset_dir: Path) -> set[str]:
    """Files a writer added beside the dataset (`add_extra_file`): listed in the manifest, or in the incomplete
    marker of an unfinished write."""
    if (dataset_dir / MANIFEST_FILENAME).is_file():
        try:
            return set(read_manifest(dataset_dir).get("extra_files", []))
        except (ValueError, AttributeError):  # not a manifest this package wrote: nothing is known to be ours
            return set()
    marker = dataset_dir / INCOMPLETE_MARKER_FILENAME
    if marker.is_file():
        lines = marker.read_text().splitlines()
        return {line.removeprefix(_EXTRA_FILE_PREFIX) for line in lines if line.startswith(_EXTRA_FILE_PREFIX)}
    return set()


def check_dataset_output_dir(
    output_dir: str | os.PathLike, *, overwrite: bool, also_dataset_files: Collection[str] = ()
) -> bool:
    """Whether a dataset writer may write to `output_dir`, checked before anything is read or written: a new or
    empty folder, or with `overwrite` one that holds an RGNet dataset (or the remains of an aborted write) and
    nothing else (only the dataset is replaced: raw inputs kept beside it are never deleted).

    `also_dataset_files` names further files the caller knows to belong to the dataset (e.g. a generator's file that
    an older manifest did not list), which the caller replaces itself.

    Returns:
        `bool`: whether there is a dataset to replace (its entries are what overwriting deletes).

    Raises:
        ValueError: naming `output_dir` and what is in the way.
    """
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return False
    if not output_dir.is_dir():
        raise ValueError(f"`output_dir` {str(output_dir)!r} exists and is not a directory.")
    names = sorted(path.name for path in output_dir.iterdir())
    if not names:
        return False
    if not overwrite:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} is not empty; pass overwrite=True (`--overwrite` in the scripts) to "
            "replace an existing RGNet dataset."
        )
    if MANIFEST_FILENAME not in names and INCOMPLETE_MARKER_FILENAME not in names:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} is not empty and holds no RGNet dataset ({MANIFEST_FILENAME}) or "
            "unfinished one; refusing to delete it."
        )
    ours = _DATASET_ENTRIES | _extra_files(output_dir) | set(also_dataset_files)  # the manifest read once
    others = [name for name in names if name not in ours]
    if others:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} holds an RGNet dataset and other files {others[:5]}; overwriting "
            "would delete them with the dataset: move them, or write the dataset elsewhere."
        )
    return True


class RGNetDatasetWriter:
    """Write an RGNet dataset directory: frame features into `.npy` shards, query rows into split tables.

    Videos are streamed straight to the current shard (nothing is buffered beyond one video); query rows are
    streamed to a temporary Arrow file per split and saved as a `DatasetDict` by `finalize`, which writes the
    manifest last, so an interrupted conversion leaves no loadable dataset. Usable as a context manager
    (`finalize` runs on a clean exit; on an exception the temporary files are removed and nothing is finalised).

    Args:
        output_dir (`str` or `os.PathLike`):
            Dataset directory to create. It must not exist or be empty, unless `overwrite=True` and it holds an
            RGNet dataset (its manifest) or the remains of an unfinished write, which are then replaced.
        max_shard_bytes (`int`, *optional*, defaults to 2 GiB):
            A new shard starts when the next video would push the current one past this size; a video larger
            than this gets a shard of its own.
        metadata (`Mapping`, *optional*):
            JSON-serialisable dataset metadata stored in the manifest (e.g. `{"dataset": "mad",
            "seconds_per_frame": 0.2}`).
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing RGNet dataset (or the remains of an aborted write) at `output_dir`: its entries are
            deleted when the writer opens, so a failed conversion leaves none of the old dataset. Refused when the
            folder holds anything else.
        extra_query_features (`datasets.Features`, *optional*):
            Types of additional query columns beyond `QUERY_COLUMN_TYPES` (e.g. for a synthetic generator).

    Example:

    ```python
    >>> with RGNetDatasetWriter("my_dataset", metadata={"seconds_per_frame": 0.2}) as writer:
    ...     writer.add_video("movie_a", features)  # float32 (T, D)
    ...     writer.add_query("train", {"query_id": "q0", "query": "A man opens a door.", "video_id": "movie_a",
    ...                                "duration": 120.0, "timestamps": [10.0, 14.5]})
    >>> queries, store = load_rgnet_dataset("my_dataset")
    ```
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        extra_query_features: Features | None = None,
    ):
        if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
            raise ValueError(f"`max_shard_bytes` must be a positive integer, got {max_shard_bytes!r}.")
        self.output_dir = Path(output_dir)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = dict(metadata or {})
        try:
            json.dumps(self.metadata)
        except TypeError as error:
            raise ValueError(f"`metadata` must be JSON-serialisable: {error}") from None
        self.extra_query_features = Features(extra_query_features or {})
        clash = set(self.extra_query_features) & set(QUERY_COLUMN_TYPES)
        if clash:
            raise ValueError(f"`extra_query_features` redefines standard columns {sorted(clash)}.")
        self._prepare_output_dir(overwrite)
        self._features_dir = self.output_dir / FEATURES_DIRNAME
        self._features_dir.mkdir(parents=True)
        self._temporary_dir = self.output_dir / _QUERIES_TEMPORARY_DIRNAME
        self._temporary_dir.mkdir()

        self.feature_dim: int | None = None
        self._locations: dict[str, VideoLocation] = {}
        self._shard_names: list[str] = []
        self._shard_file: io.BufferedWriter | None = None
        self._shard_rows = 0
        self._split_writers: dict[str, ArrowWriter] = {}
        self._split_columns: dict[str, tuple[str, ...]] = {}
        self._split_features: dict[str, Features] = {}
        self._split_query_ids: dict[str, set[str]] = {}
        self._split_videos: dict[str, set[str]] = {}
        self._extra_files: list[str] = []
        self._finalized = False

    def _prepare_output_dir(self, overwrite: bool) -> None:
        if check_dataset_output_dir(self.output_dir, overwrite=overwrite):
            for path in self.output_dir.iterdir():
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / INCOMPLETE_MARKER_FILENAME).write_text("written by RGNetDatasetWriter; not finalized\n")

    # -- videos --

    @property
    def video_ids(self) -> tuple[str, ...]:
        """Ids of the videos added so far, in order."""
        return tuple(self._locations)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._locations

    def add_video(self, video_id: str, features: Any) -> None:
        """Append one video's frame features to the store.

        Args:
            video_id (`str`): Unique, non-empty id (the `video_id` of its query rows).
            features (`np.ndarray` or array-like): `(T, D)` per-frame features, `T >= 1`; stored as float32.
                Every video of a dataset must have the same `D`.

        Raises:
            ValueError: If `video_id` is empty or already added, or `features` is not 2-D, has a different `D`,
                or holds NaN or infinite values (the message names the video).
        """
        self._check_open()
        if not isinstance(video_id, str) or not video_id:
            raise ValueError(f"`video_id` must be a non-empty string, got {video_id!r}.")
        if video_id in self._locations:
            raise ValueError(f"`video_id` {video_id!r} was already added.")
        array = _as_feature_matrix(features, name="features", owner=f"video {video_id!r}")
        if self.feature_dim is None:
            self.feature_dim = int(array.shape[1])
        elif array.shape[1] != self.feature_dim:
            raise ValueError(
                f"`features` of video {video_id!r} have width {array.shape[1]}, but the store's feature_dim is "
                f"{self.feature_dim}."
            )
        if self._shard_file is not None and self._shard_rows > 0:
            if (self._shard_rows + array.shape[0]) * self.feature_dim * 4 > self.max_shard_bytes:
                self._close_shard()
        if self._shard_file is None:
            self._open_shard()
        self._shard_file.write(array.data)
        self._locations[video_id] = VideoLocation(len(self._shard_names) - 1, self._shard_rows, int(array.shape[0]))
        self._shard_rows += int(array.shape[0])

    def _open_shard(self) -> None:
        name = f"shard-{len(self._shard_names):05d}.npy"
        self._shard_names.append(name)
        self._shard_file = open(self._features_dir / name, "wb")  # closed in _close_shard
        self._shard_file.write(b"\0" * _NPY_HEADER_BYTES)
        self._shard_rows = 0

    def _close_shard(self) -> None:
        if self._shard_file is None:
            return
        self._shard_file.seek(0)
        self._shard_file.write(_npy_header(self._shard_rows, self.feature_dim))
        self._shard_file.close()
        self._shard_file = None

    # -- queries --

    def _column_type(self, column: str, value: Any) -> Any:
        if column == "text_features":
            return Array2D(shape=(None, int(np.shape(value)[1])), dtype="float32")
        if column == "sentence_embedding":
            return List(Value("float32"), length=int(np.shape(value)[0]))
        return QUERY_COLUMN_TYPES.get(column, self.extra_query_features.get(column))

    def _normalize_row(self, split: str, row: Mapping[str, Any]) -> dict[str, Any]:
        query_id = row.get("query_id")
        if not isinstance(query_id, str) or not query_id:
            raise ValueError(f"`query_id` must be a non-empty string, got {query_id!r} (split {split!r}).")
        owner = f"query {query_id!r}"
        missing = [column for column in REQUIRED_QUERY_COLUMNS if column not in row and column != "split"]
        if missing:
            raise ValueError(f"{owner} misses required column(s) {missing}.")
        unknown = [
            column for column in row if column not in QUERY_COLUMN_TYPES and column not in self.extra_query_features
        ]
        if unknown:
            raise ValueError(f"{owner} has unknown column(s) {unknown}; declare them in `extra_query_features`.")
        if row.get("split", split) != split:
            raise ValueError(f"{owner} has `split` {row['split']!r} but is added to split {split!r}.")
        text = row["query"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"`query` of {owner} must be a non-empty string, got {text!r}.")
        video_id = row["video_id"]
        if not isinstance(video_id, str) or not video_id:
            raise ValueError(f"`video_id` of {owner} must be a non-empty string, got {video_id!r}.")
        duration = row["duration"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float, np.integer, np.floating)):
            raise ValueError(f"`duration` of {owner} must be a number, got {duration!r}.")
        if not math.isfinite(float(duration)) or float(duration) <= 0:
            raise ValueError(f"`duration` of {owner} must be finite and positive, got {duration!r}.")
        timestamps = _as_span(row["timestamps"], name="timestamps", query_id=query_id)
        if timestamps is not None and timestamps[0] > timestamps[1]:
            raise ValueError(f"`timestamps` of {owner} are reversed: {timestamps} (start must be <= end).")

        normalized = dict(row)
        normalized.update(split=split, duration=float(duration), timestamps=timestamps)
        if "clip_video_start_end" in row:
            normalized["clip_video_start_end"] = _as_span(
                row["clip_video_start_end"], name="clip_video_start_end", query_id=query_id
            )
        for column in ("clip_id", "video_uid"):
            if column in row and not isinstance(row[column], str):
                raise ValueError(f"`{column}` of {owner} must be a string, got {row[column]!r}.")
        if "text_features" in row:
            normalized["text_features"] = _as_feature_matrix(row["text_features"], name="text_features", owner=owner)
        if "sentence_embedding" in row:
            embedding = np.asarray(row["sentence_embedding"])
            if embedding.ndim != 1:
                raise ValueError(f"`sentence_embedding` of {owner} must be 1-D, got shape {embedding.shape}.")
            normalized["sentence_embedding"] = _as_feature_matrix(
                embedding[None], name="sentence_embedding", owner=owner
            )[0]
        return normalized

    def add_query(self, split: str, row: Mapping[str, Any]) -> None:
        """Add one query row to `split` (created on first use).

        The first row of a split fixes its columns (and the widths of `text_features`/`sentence_embedding`);
        later rows must have the same columns and widths.

        Args:
            split (`str`): Split name (letters, digits, underscores; e.g. `"train"`, `"naq_train"`).
            row (`Mapping`): Columns as in the module docstring; `split` is filled in when absent.
                `video_id` must name a video added before `finalize` (order does not matter).

        Raises:
            ValueError: On a bad split name, a missing/unknown column, a malformed value, reversed or non-finite
                timestamps, non-finite features, a repeated `query_id` in the split, or columns/widths that differ
                from the split's first row.
        """
        self._check_open()
        _check_split_name(split)
        normalized = self._normalize_row(split, row)
        query_id = normalized["query_id"]
        if split not in self._split_writers:
            columns = [column for column in QUERY_COLUMN_TYPES if column in normalized]
            columns += [column for column in self.extra_query_features if column in normalized]
            features = Features({column: self._column_type(column, normalized[column]) for column in columns})
            self._split_columns[split] = tuple(columns)
            self._split_features[split] = features
            self._split_query_ids[split] = set()
            self._split_videos[split] = set()
            self._split_writers[split] = ArrowWriter(
                features=features, path=str(self._temporary_dir / f"{split}.arrow"), writer_batch_size=256
            )
        columns = self._split_columns[split]
        if set(normalized) != set(columns):
            raise ValueError(
                f"query {query_id!r} has columns {sorted(normalized)}, but split {split!r} has {sorted(columns)} "
                "(fixed by its first row)."
            )
        features = self._split_features[split]
        for column in ("text_features", "sentence_embedding"):
            if column in normalized:
                expected = features[column].shape[1] if column == "text_features" else features[column].length
                if normalized[column].shape[-1] != expected:
                    raise ValueError(
                        f"`{column}` of query {query_id!r} have width {normalized[column].shape[-1]}, expected "
                        f"{expected} (fixed by the first row of split {split!r})."
                    )
        if query_id in self._split_query_ids[split]:
            raise ValueError(f"`query_id` {query_id!r} appears twice in split {split!r}.")
        self._split_query_ids[split].add(query_id)
        self._split_videos[split].add(normalized["video_id"])
        self._split_writers[split].write({column: normalized[column] for column in columns})

    def add_queries(self, split: str, rows: Iterable[Mapping[str, Any]], *, progress: bool = False) -> int:
        """Add many query rows to `split` (see `add_query`).

        Args:
            split (`str`): Split name.
            rows (`Iterable[Mapping]`): Query rows.
            progress (`bool`, *optional*, defaults to `False`): Show a tqdm progress bar.

        Returns:
            `int`: Number of rows added.
        """
        count = 0
        for row in tqdm(rows, desc=f"queries ({split})", unit="query", disable=not progress):
            self.add_query(split, row)
            count += 1
        return count

    def add_extra_file(self, name: str, text: str) -> Path:
        """Write a text file of the dataset's own beside the standard layout (e.g. a generator's ground truth).

        The dataset's manifest lists it, so overwriting the dataset replaces it with the rest (files nobody declared
        stop an overwrite instead).

        Args:
            name (`str`): A plain file name, not one of the layout's own.
            text (`str`): Its content.

        Returns:
            `Path`: The written file.
        """
        self._check_open()
        if not isinstance(name, str) or not name or Path(name).name != name or name in _DATASET_ENTRIES:
            raise ValueError(f"`name` must be a plain file name other than the layout's own entries, got {name!r}.")
        with (self.output_dir / INCOMPLETE_MARKER_FILENAME).open("a") as marker:  # known as ours even if aborted
            marker.write(f"{_EXTRA_FILE_PREFIX}{name}\n")
        path = self.output_dir / name
        path.write_text(text)
        if name not in self._extra_files:
            self._extra_files.append(name)
        return path

    # -- finalisation --

    def _check_open(self) -> None:
        if self._finalized:
            raise ValueError("This RGNetDatasetWriter was already finalized or aborted.")

    def finalize(self, summary: Mapping[str, Any] | None = None) -> Path:
        """Close the shards, save the query tables, write the index and (last) the manifest.

        Args:
            summary (`Mapping`, *optional*): A conversion summary to write to `conversion_summary.json`.

        Returns:
            `Path`: The dataset directory.

        Raises:
            ValueError: If no video was added, or a query row names a video that was never added.
        """
        self._check_open()
        if not self._locations:
            raise ValueError("No video was added: an RGNet dataset needs at least one video (`add_video`).")
        for split, videos in self._split_videos.items():
            missing = sorted(videos - self._locations.keys())
            if missing:
                raise ValueError(
                    f"split {split!r} has queries on {len(missing)} video(s) without features, e.g. {missing[:5]}; "
                    "call `add_video` for them or drop those queries."
                )
        self._close_shard()
        splits = {}
        queries = {}
        for split, writer in self._split_writers.items():
            writer.finalize()
            writer.close()
            queries[split] = Dataset.from_file(str(self._temporary_dir / f"{split}.arrow"), split=NamedSplit(split))
            splits[split] = {"num_rows": queries[split].num_rows, "columns": list(self._split_columns[split])}
        DatasetDict(queries).save_to_disk(str(self.output_dir / QUERIES_DIRNAME))
        del queries
        shutil.rmtree(self._temporary_dir)

        video_ids = list(self._locations)
        locations = list(self._locations.values())
        _write_json(
            self._features_dir / INDEX_FILENAME,
            {
                "video_id": video_ids,
                "shard": [location.shard for location in locations],
                "offset": [location.offset for location in locations],
                "num_frames": [location.num_frames for location in locations],
            },
        )
        if summary is not None:
            _write_json(self.output_dir / SUMMARY_FILENAME, dict(summary))
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "feature_dim": self.feature_dim,
            "feature_dtype": "float32",
            "num_videos": len(video_ids),
            "num_frames": int(sum(location.num_frames for location in locations)),
            "shards": list(self._shard_names),
            "splits": splits,
            "metadata": self.metadata,
        }
        if self._extra_files:
            manifest["extra_files"] = list(self._extra_files)
        _write_json(self.output_dir / MANIFEST_FILENAME, manifest)
        (self.output_dir / INCOMPLETE_MARKER_FILENAME).unlink()
        self._finalized = True
        logger.info(
            "wrote RGNet dataset %s: %d videos, %d frames, %d shard(s), splits %s",
            self.output_dir,
            manifest["num_videos"],
            manifest["num_frames"],
            len(self._shard_names),
            {split: entry["num_rows"] for split, entry in splits.items()},
        )
        return self.output_dir

    def abort(self) -> None:
        """Close open files and remove temporary files without writing a manifest (the directory stays unloadable)."""
        if self._finalized:
            return
        if self._shard_file is not None:
            self._shard_file.close()
            self._shard_file = None
        for writer in self._split_writers.values():
            try:
                writer.close()
            except Exception:  # best-effort cleanup after a failure
                pass
        shutil.rmtree(self._temporary_dir, ignore_errors=True)
        self._finalized = True

    def __enter__(self) -> RGNetDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finalized:
            try:
                self.finalize()
            except BaseException:  # e.g. queries on a video without features: the same clean-up as any failure
                self.abort()
                raise


# ---- Reader ----


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the manifest of an RGNet dataset directory.

    Args:
        path (`str` or `os.PathLike`): Dataset directory.

    Returns:
        `dict`: The manifest.

    Raises:
        ValueError: If `path` holds no RGNet dataset or one of an unsupported format version.
    """
    manifest_path = Path(path) / MANIFEST_FILENAME
    if not manifest_path.is_file():
        raise ValueError(
            f"{str(path)!r} is not an RGNet dataset directory (no {MANIFEST_FILENAME}); scripts/prepare_mad.py, "
            "scripts/prepare_ego4d_nlq.py and scripts/make_synthetic_dataset.py build one."
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"`path` {str(path)!r} holds format {manifest.get('format')!r} version {manifest.get('format_version')!r};"
            f" this code reads {FORMAT_NAME!r} version {FORMAT_VERSION}."
        )
    return manifest


class RGNetFeatureStore:
    """Read-only access to the per-frame video features of an RGNet dataset.

    `read_frames(video_id, start, end)` reads only rows `[start, end)` of one video, which are one contiguous
    byte range of one shard, with a single positional read (`os.preadv`) straight into the returned array. On
    data in the page cache this costs the same as slicing a memory map; on data that must come from storage it is
    several times faster than letting a memory map fault the pages in (`scripts/benchmark_data.py`).
    `memmap(video_id)` gives a zero-copy, read-only memory-mapped view of a whole video instead.

    File descriptors and memory maps are opened lazily, per process: a store created in the main process can be
    handed to forked `DataLoader` workers (each opens its own on first use) or pickled to spawned ones.

    Args:
        path (`str` or `os.PathLike`): Dataset directory written by `RGNetDatasetWriter`.

    Raises:
        ValueError: If `path` holds no RGNet dataset or its index repeats a video id.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest = read_manifest(self.path)
        self.metadata: dict[str, Any] = manifest.get("metadata", {})
        self._feature_dim = int(manifest["feature_dim"])
        self._row_bytes = self._feature_dim * _FEATURE_DTYPE.itemsize
        features_dir = self.path / FEATURES_DIRNAME
        self._shard_paths = [features_dir / name for name in manifest["shards"]]
        index = json.loads((features_dir / INDEX_FILENAME).read_text())
        self._video_ids = tuple(index["video_id"])
        self._locations = {
            video_id: VideoLocation(int(shard), int(offset), int(num_frames))
            for video_id, shard, offset, num_frames in zip(
                self._video_ids, index["shard"], index["offset"], index["num_frames"], strict=True
            )
        }
        if len(self._locations) != len(self._video_ids):
            raise ValueError(f"The feature index of {str(self.path)!r} repeats a video id.")
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._owner_pid = os.getpid()
        self._descriptors: dict[int, tuple[int, int]] = {}  # shard -> (file descriptor, data offset in bytes)
        self._maps: dict[int, np.ndarray] = {}

    # -- metadata --

    @property
    def feature_dim(self) -> int:
        """Width `D` of every frame feature."""
        return self._feature_dim

    @property
    def video_ids(self) -> tuple[str, ...]:
        """All video ids, in storage order."""
        return self._video_ids

    def __len__(self) -> int:
        return len(self._video_ids)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._locations

    def __repr__(self) -> str:
        return f"RGNetFeatureStore(path={str(self.path)!r}, num_videos={len(self)}, feature_dim={self.feature_dim})"

    def location(self, video_id: str) -> VideoLocation:
        """Shard number, row offset and frame count of a video.

        Raises:
            ValueError: If `video_id` is not in the store.
        """
        try:
            return self._locations[video_id]
        except (KeyError, TypeError):
            raise ValueError(f"`video_id` {video_id!r} is not in the feature store at {str(self.path)!r}.") from None

    def num_frames(self, video_id: str) -> int:
        """Number of frames `T` of a video.

        Raises:
            ValueError: If `video_id` is not in the store.
        """
        return self.location(video_id).num_frames

    # -- reading --

    def _check_process(self) -> None:
        if self._owner_pid != os.getpid():
            # A forked child inherits the parent's descriptors; it leaves them alone and opens its own.
            self._reset_handles()

    def _check_shard_header(self, shard: int, handle: io.BufferedReader) -> int:
        """Validate a shard's .npy header and return the byte offset of its data."""
        path = self._shard_paths[shard]
        try:
            version = np.lib.format.read_magic(handle)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = read_header(handle)
        except ValueError as error:
            raise ValueError(f"Shard {str(path)!r} is not a readable .npy file: {error}") from None
        if dtype != _FEATURE_DTYPE or fortran_order or len(shape) != 2 or shape[1] != self._feature_dim:
            raise ValueError(
                f"Shard {str(path)!r} holds {dtype} {shape} (fortran_order={fortran_order}), expected C-ordered "
                f"float32 (rows, {self._feature_dim})."
            )
        return handle.tell()

    def _descriptor(self, shard: int) -> tuple[int, int]:
        self._check_process()
        entry = self._descriptors.get(shard)
        if entry is None:
            with open(self._shard_paths[shard], "rb") as handle:
                data_offset = self._check_shard_header(shard, handle)
            entry = (os.open(self._shard_paths[shard], os.O_RDONLY), data_offset)
            self._descriptors[shard] = entry
        return entry

    def read_frames(self, video_id: str, start: int = 0, end: int | None = None) -> np.ndarray:
        """Read frames `[start, end)` of one video (only those bytes are read).

        Args:
            video_id (`str`): Video id.
            start (`int`, *optional*, defaults to 0): First frame, `0 <= start <= end`.
            end (`int`, *optional*): One past the last frame, `end <= num_frames(video_id)`; defaults to the end
                of the video.

        Returns:
            `np.ndarray`: float32 `(end - start, feature_dim)`, a fresh writable array (safe to hand to torch).

        Raises:
            ValueError: If `video_id` is unknown, or `start`/`end` are not integers or lie outside the video.
        """
        shard, offset, num_frames = self.location(video_id)
        end = num_frames if end is None else end
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"`{name}` must be an integer frame index, got {value!r}.")
        start, end = int(start), int(end)
        if not 0 <= start <= end <= num_frames:
            raise ValueError(
                f"Frames [`start`={start}, `end`={end}) are outside video {video_id!r}, which has {num_frames} "
                "frames (need 0 <= start <= end <= num_frames)."
            )
        frames = np.empty((end - start, self._feature_dim), dtype=_FEATURE_DTYPE)
        if frames.size:
            descriptor, data_offset = self._descriptor(shard)
            _read_exact(descriptor, frames, data_offset + (offset + start) * self._row_bytes, self._shard_paths[shard])
        return frames

    def read_video(self, video_id: str) -> np.ndarray:
        """All frames of one video, float32 `(T, feature_dim)`."""
        return self.read_frames(video_id)

    def memmap(self, video_id: str) -> np.ndarray:
        """Zero-copy, read-only memory-mapped view `(T, feature_dim)` of one video (e.g. to cut every window of a
        video at inference). Slices of it are read from disk when touched.

        Raises:
            ValueError: If `video_id` is not in the store.
        """
        shard, offset, num_frames = self.location(video_id)
        self._check_process()
        array = self._maps.get(shard)
        if array is None:
            array = np.load(self._shard_paths[shard], mmap_mode="r")
            self._maps[shard] = array
        return array[offset : offset + num_frames]

    def close(self) -> None:
        """Close the file descriptors and memory maps this process opened (they reopen on the next read)."""
        if self._owner_pid == os.getpid():
            for descriptor, _ in self._descriptors.values():
                os.close(descriptor)
        self._reset_handles()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean reliably
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_owner_pid", "_descriptors", "_maps"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()


def _read_exact(descriptor: int, out: np.ndarray, offset: int, path: Path) -> None:
    """Fill the C-contiguous array `out` with the bytes of the file at `offset` (positional reads, no seek)."""
    buffer = memoryview(out).cast("B")
    filled = 0
    while filled < len(buffer):
        if hasattr(os, "preadv"):
            count = os.preadv(descriptor, [buffer[filled:]], offset + filled)
        else:  # platforms without preadv
            chunk = os.pread(descriptor, len(buffer) - filled, offset + filled)
            buffer[filled : filled + len(chunk)] = chunk
            count = len(chunk)
        if count == 0:
            raise ValueError(f"Shard {str(path)!r} ended before byte {offset + len(buffer)}: the store is truncated.")
        filled += count


def load_rgnet_dataset(
    path: str | os.PathLike, *, keep_in_memory: bool = False
) -> tuple[DatasetDict, RGNetFeatureStore]:
    """Open an RGNet dataset directory.

    Args:
        path (`str` or `os.PathLike`): Directory written by `RGNetDatasetWriter` or a converter.
        keep_in_memory (`bool`, *optional*, defaults to `False`): Load the query tables into memory instead of
            memory-mapping them (the frame features are always memory-mapped).

    Returns:
        `tuple[DatasetDict, RGNetFeatureStore]`: the query tables by split (use `.with_format("numpy")` to get
        `text_features` as arrays) and the frame-feature store (`metadata` holds the manifest's metadata).

    Raises:
        ValueError: If `path` is not an RGNet dataset directory.
    """
    store = RGNetFeatureStore(path)
    queries_dir = Path(path) / QUERIES_DIRNAME
    queries = (
        load_from_disk(str(queries_dir), keep_in_memory=keep_in_memory) if queries_dir.is_dir() else DatasetDict()
    )
    if not isinstance(queries, DatasetDict):
        raise ValueError(f"`path` {str(path)!r}: {QUERIES_DIRNAME}/ holds a single Dataset, expected a DatasetDict.")
    return queries, store


# ---- Conversion driver (shared by the converters) ----


def build_rgnet_dataset(
    output_dir: str | os.PathLike,
    rows_by_split: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    dataset: str,
    video_ids: Collection[str],
    load_video: Callable[[str], Any],
    text_ids: Collection[str] | None = None,
    load_text: Callable[[str], Mapping[str, Any]] | None = None,
    train_splits: Collection[str] | None = None,
    strict: bool = False,
    metadata: Mapping[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Filter converted query rows, then write the videos they use and the rows themselves.

    Only videos referenced by a kept query are written (others are counted as unused).

    Args:
        output_dir (`str` or `os.PathLike`): Dataset directory to create.
        rows_by_split (`Mapping[str, Iterable[Mapping]]`): Candidate query rows per split, in the column
            convention of the module docstring (before filtering).
        dataset (`str`): `"mad"` or `"ego4d"` (selects the spec §9.1 filters).
        video_ids (`Collection[str]`): Ids for which `load_video` has features.
        load_video (`Callable[[str], array]`): Returns the `(T, D)` features of a video id.
        text_ids (`Collection[str]`, *optional*): Query ids with text features; when given, `load_text` is
            required and queries outside it are dropped (`missing_text_features`).
        load_text (`Callable[[str], Mapping]`, *optional*): Returns `{"text_features": (Lt, Dt)}` and optionally
            `"sentence_embedding": (Dc,)` for a query id.
        train_splits (`Collection[str]`, *optional*): Splits that get the training filters; defaults to those
            whose name contains `"train"`.
        strict (`bool`, *optional*, defaults to `False`): Raise instead of dropping queries with missing video or
            text features.
        metadata (`Mapping`, *optional*): Stored in the manifest.
        max_shard_bytes (`int`, *optional*): See `RGNetDatasetWriter`.
        overwrite (`bool`, *optional*, defaults to `False`): See `RGNetDatasetWriter`.
        progress (`bool`, *optional*, defaults to `True`): Show tqdm progress bars.

    Returns:
        `dict`: The conversion summary (also written to `conversion_summary.json`): `splits` (see
        `ConversionStats.as_dict`) and `videos` (`available`, `written`, `unused`, `frames_written`).

    Raises:
        ValueError: On bad arguments or rows (see `clean_query_row`, `RGNetDatasetWriter`), non-finite features
            (naming the video), or, with `strict=True`, a query whose video or text features are missing.
    """
    _check_dataset_kind(dataset)
    if (text_ids is None) != (load_text is None):
        raise ValueError("`text_ids` and `load_text` must be given together.")
    video_id_set = set(video_ids)
    text_id_set = set(text_ids) if text_ids is not None else None
    stats = ConversionStats()
    kept: dict[str, list[dict]] = {}
    for split, rows in rows_by_split.items():
        _check_split_name(split)
        is_train = split in train_splits if train_splits is not None else default_is_train_split(split)
        seen: set[str] = set()
        kept_rows = kept.setdefault(split, [])
        stats.add_split(split)  # an empty split is reported too, with its zero counts
        for row in tqdm(rows, desc=f"filter ({split})", unit="query", disable=not progress):
            stats.add_input(split)
            query_id = row["query_id"]
            if query_id in seen:
                stats.add_drop(split, "duplicate_query_id", query_id)
                continue
            seen.add(query_id)
            result = clean_query_row(row, dataset=dataset, is_train=is_train)
            if result.row is None:
                stats.add_drop(split, result.drop_reason, query_id)
                continue
            if result.row["video_id"] not in video_id_set:
                if strict:
                    raise ValueError(
                        f"query {query_id!r} (split {split!r}): no features for video {row['video_id']!r}."
                    )
                stats.add_drop(split, "missing_video_features", query_id)
                continue
            if text_id_set is not None and query_id not in text_id_set:
                if strict:
                    raise ValueError(f"query {query_id!r} (split {split!r}): no text features.")
                stats.add_drop(split, "missing_text_features", query_id)
                continue
            stats.add_kept(split, result.repairs)
            kept_rows.append(result.row)

    for split, rows in kept.items():
        if not rows:
            logger.warning("split %r: no query row is left after filtering; the split is not written", split)
    needed_videos = list(dict.fromkeys(row["video_id"] for rows in kept.values() for row in rows))
    summary: dict[str, Any] = {"dataset": dataset, "splits": stats.as_dict()}
    if not needed_videos:  # say why, before the writer's generic "no video" error
        dropped: Counter = Counter()
        for entry in summary["splits"].values():
            dropped.update(entry["dropped"])
        hint = ""
        if dropped.get("missing_video_features"):
            hint = (
                f" None of the annotations' videos is among the {len(video_id_set)} video(s) of the video features "
                "(check the video features flag, and that its keys are the annotations' video ids)."
            )
        elif dropped.get("missing_text_features"):
            hint = " No query has text features (check the text features flag and its keys)."
        raise ValueError(f"No query row is left after filtering, so there is nothing to write: {dict(dropped)}.{hint}")
    with RGNetDatasetWriter(
        output_dir, max_shard_bytes=max_shard_bytes, metadata=metadata, overwrite=overwrite
    ) as writer:
        frames = 0
        for video_id in tqdm(needed_videos, desc="videos", unit="video", disable=not progress):
            features = load_video(video_id)
            writer.add_video(video_id, features)
            frames += int(np.shape(features)[0])
        for split, rows in kept.items():
            for row in tqdm(rows, desc=f"queries ({split})", unit="query", disable=not progress):
                if load_text is not None:
                    row = {**row, **load_text(row["query_id"])}
                writer.add_query(split, row)
        summary["videos"] = {
            "available": len(video_id_set),
            "written": len(needed_videos),
            "unused": len(video_id_set - set(needed_videos)),
            "frames_written": frames,
        }
        writer.finalize(summary=summary)
    stats.log()
    logger.info("videos: %s", summary["videos"])
    return summary


def add_converter_arguments(parser, *, source: str) -> None:
    """Add the flags every converter script shares (annotations, output, original layout, filters, sharding).

    Args:
        parser (`argparse.ArgumentParser`): The script's parser.
        source (`str`): The release's annotation format, for the help text (e.g. `"MAD JSON"`).
    """
    parser.add_argument(
        "--annotations",
        action="append",
        required=True,
        metavar="SPLIT=PATH",
        help=f"Annotation file of one split ({source}; JSON Lines with --original-layout). Repeat per split.",
    )
    parser.add_argument("--output", required=True, type=Path, help="Dataset directory to create.")
    parser.add_argument(
        "--original-layout",
        action="store_true",
        help="Read the original implementation's JSON Lines + LMDB layout instead of the official release.",
    )
    parser.add_argument("--video-lmdb", type=Path, help="Original-layout video LMDB (with --original-layout).")
    parser.add_argument("--text-lmdb", type=Path, help="Original-layout text LMDB (optional, --original-layout).")
    parser.add_argument(
        "--train-splits",
        help="Comma-separated splits that get the training filters (default: names containing 'train').",
    )
    parser.add_argument(
        "--strict", action="store_true", help="Fail on a query whose video or text features are missing."
    )
    parser.add_argument(
        "--max-shard-gb", type=float, default=DEFAULT_MAX_SHARD_BYTES / 1024**3, help="Feature shard size (GiB)."
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing RGNet dataset at --output.")
    parser.add_argument("--summary", type=Path, help="Also write the conversion summary JSON here.")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def converter_options(args, parser) -> tuple[dict[str, Path], dict[str, Any]]:
    """Check the shared converter flags; returns `(annotation path per split, build_rgnet_dataset keywords)`.

    Errors are reported through `parser.error` (exit status 2 with the usage line).
    """
    try:
        annotations = parse_split_paths(args.annotations, "--annotations")
        if not math.isfinite(args.max_shard_gb) or args.max_shard_gb <= 0:
            raise ValueError(f"`--max-shard-gb` must be a positive number, got {args.max_shard_gb}.")
        # Before the annotations are read and filtered (which takes minutes on MAD): an unusable folder ends the run.
        check_dataset_output_dir(args.output, overwrite=args.overwrite)
        if args.summary is not None and args.summary.is_dir():
            raise ValueError(f"`--summary` {str(args.summary)!r} is a directory; give the path of a JSON file.")
    except ValueError as error:
        parser.error(str(error))
    if args.original_layout and args.video_lmdb is None:
        parser.error("--original-layout needs --video-lmdb.")
    for name in ("video_features", "text_features", "video_lmdb", "text_lmdb", "features_dir"):  # those given
        path = getattr(args, name, None)
        if path is not None and not Path(path).exists():
            parser.error(f"--{name.replace('_', '-')} {str(path)!r} does not exist.")
    if args.no_progress:  # also the bars `datasets` shows while saving the query tables
        import datasets

        datasets.disable_progress_bars()
    train_splits = args.train_splits.split(",") if args.train_splits else None
    unknown = sorted(set(train_splits or ()) - set(annotations))
    if unknown:  # a misspelt name would silently give the training split the evaluation rules
        parser.error(
            f"--train-splits names split(s) {unknown} that --annotations does not give ({sorted(annotations)})."
        )
    options = {
        "train_splits": train_splits,
        "strict": args.strict,
        "max_shard_bytes": max(1, int(args.max_shard_gb * 1024**3)),
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
    }
    return annotations, options


def parse_split_paths(values: list[str], flag: str) -> dict[str, Path]:
    """Parse repeated `SPLIT=PATH` command-line arguments (used by the converter scripts).

    Args:
        values (`list[str]`): The raw `SPLIT=PATH` strings.
        flag (`str`): The flag name, for error messages.

    Returns:
        `dict[str, Path]`: Path per split, in argument order.

    Raises:
        ValueError: On a malformed entry, a repeated split or a missing file.
    """
    paths: dict[str, Path] = {}
    for value in values:
        split, sep, path = value.partition("=")
        if not sep or not split or not path:
            raise ValueError(f"`{flag}` expects SPLIT=PATH, got {value!r}.")
        if split in paths:
            raise ValueError(f"`{flag}` names split {split!r} twice.")
        if not Path(path).is_file():
            raise ValueError(f"`{flag}` file {path!r} (split {split!r}) does not exist.")
        paths[split] = Path(path)
    return paths


# ---- Original implementation's layout (spec §9: JSON Lines + LMDB of compressed .npz) ----


def read_json(path: str | os.PathLike, flag: str) -> Any:
    """The JSON value in the file `path` given by `flag`.

    Raises:
        ValueError: If the file is not valid JSON (the message names the flag, the file and where parsing failed),
            or an object repeats a key (`json` would keep the last silently: a MAD annotation's repeated query id).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=_object_with_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"`{flag}` file {str(path)!r} is not valid JSON: {error}.") from None
    except _RepeatedKeyError as error:
        raise ValueError(f"`{flag}` file {str(path)!r} repeats the key {error.args[0]!r} in one object.") from None


class _RepeatedKeyError(Exception):
    pass


def _object_with_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        raise _RepeatedKeyError(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return result


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON Lines file (blank lines skipped).

    Raises:
        ValueError: If a line is not a JSON object (the message gives the file and line number).
    """
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows


class LmdbNpzReader:
    """Read-only view of an original-layout LMDB environment whose values are bytes of a compressed `.npz`.

    Requires the `lmdb` package.

    Args:
        path (`str` or `os.PathLike`): The environment (a directory holding `data.mdb`, or the `.mdb` file).

    Raises:
        ValueError: If `path` does not exist.
    """

    def __init__(self, path: str | os.PathLike):
        import lmdb  # optional dependency, only needed for the original layout

        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"LMDB environment {str(self.path)!r} does not exist.")
        try:
            self._env = lmdb.open(
                str(self.path), subdir=self.path.is_dir(), readonly=True, lock=False, readahead=False, meminit=False
            )
        except lmdb.Error as error:
            raise ValueError(f"{str(self.path)!r} is not an LMDB environment: {error}") from None

    def keys(self) -> set[str]:
        """All keys, decoded as UTF-8."""
        with self._env.begin(write=False) as transaction:
            return {bytes(key).decode("utf-8") for key in transaction.cursor().iternext(keys=True, values=False)}

    def get(self, key: str) -> dict[str, np.ndarray]:
        """Arrays stored under `key`.

        Raises:
            ValueError: If `key` is absent or its value is not a readable `.npz` archive.
        """
        with self._env.begin(write=False) as transaction:
            value = transaction.get(key.encode("utf-8"))
            if value is None:
                raise ValueError(f"key {key!r} is not in LMDB environment {str(self.path)!r}.")
            value = bytes(value)
        try:
            with np.load(io.BytesIO(value), allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except Exception as error:  # any decoding failure reads the same
            raise ValueError(f"value of key {key!r} in {str(self.path)!r} is not a readable .npz: {error}") from None

    def close(self) -> None:
        """Close the environment."""
        self._env.close()


def original_video_features(arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    """The `features` array `(T, Dv)` of an original video-store value.

    Raises:
        ValueError: If the archive has no `features` array.
    """
    if "features" not in arrays:
        raise ValueError(f"video store value of {key!r} has no `features` array (found {sorted(arrays)}).")
    return arrays["features"]


def original_text_features(arrays: Mapping[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    """Text features of an original text-store value, renamed to the query-table columns.

    `token_features` `(Lt, 512)` becomes `text_features`; `cls_features` (or `eot_features`; row 0 if 2-D) becomes
    `sentence_embedding` `(Dc,)`.

    Raises:
        ValueError: If `token_features` or both sentence arrays are absent, or a shape is unexpected.
    """
    if "token_features" not in arrays:
        raise ValueError(f"text store value of {key!r} has no `token_features` array (found {sorted(arrays)}).")
    name = "cls_features" if "cls_features" in arrays else "eot_features"
    if name not in arrays:
        raise ValueError(
            f"text store value of {key!r} has neither `cls_features` nor `eot_features` (found {sorted(arrays)})."
        )
    sentence = np.asarray(arrays[name])
    if sentence.ndim == 2:
        sentence = sentence[0]
    if sentence.ndim != 1:
        raise ValueError(f"`{name}` of {key!r} must be 1-D or 2-D, got shape {arrays[name].shape}.")
    return {"text_features": arrays["token_features"], "sentence_embedding": sentence}


def original_annotation_rows(path: str | os.PathLike, *, dataset: str) -> list[dict[str, Any]]:
    """Query rows of one original-layout JSON Lines annotation file, in this layout's column convention.

    The feature key becomes `video_id` (the original `clip_id`, falling back to `video_id`); for Ego4D the
    original `video_id` is kept as `video_uid`, with `clip_video_start_end` (null where a row lacks it).

    Args:
        path (`str` or `os.PathLike`): JSON Lines file (spec §9.1).
        dataset (`str`): `"mad"` or `"ego4d"`.

    Raises:
        ValueError: If a row misses `query_id`, `query`, `duration` or both `clip_id` and `video_id`.
    """
    _check_dataset_kind(dataset)
    rows = []
    for raw in read_jsonl(path):
        for key in ("query_id", "query", "duration"):
            if key not in raw:
                raise ValueError(f"{path}: row {raw.get('query_id', '?')!r} misses key {key!r}.")
        feature_key = raw.get("clip_id", raw.get("video_id"))
        if feature_key is None:
            raise ValueError(f"{path}: row {raw['query_id']!r} has neither `clip_id` nor `video_id`.")
        row = {
            "query_id": str(raw["query_id"]),
            "query": raw["query"] if raw["query"] is not None else "",
            "video_id": str(feature_key),
            "duration": raw["duration"],
            "timestamps": raw.get("timestamps"),
            "clip_id": str(feature_key),
        }
        if dataset == "ego4d":
            row["video_uid"] = str(raw.get("video_id", feature_key))
            # Every row has the column (null where the file lacks it): a split's columns are fixed by its first row.
            row["clip_video_start_end"] = raw.get("clip_video_start_end")
        rows.append(row)
    return rows


def convert_original_layout(
    annotation_files: Mapping[str, str | os.PathLike],
    video_lmdb: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dataset: str,
    text_lmdb: str | os.PathLike | None = None,
    train_splits: Collection[str] | None = None,
    strict: bool = False,
    metadata: Mapping[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert the original implementation's preprocessed layout (spec §9) into an RGNet dataset directory.

    Args:
        annotation_files (`Mapping[str, path]`): JSON Lines annotation file per split name.
        video_lmdb (`str` or `os.PathLike`): Video store (key `clip_id` -> npz `features` `(T, Dv)`).
        output_dir (`str` or `os.PathLike`): Dataset directory to create.
        dataset (`str`): `"mad"` or `"ego4d"` (selects the spec §9.1 filters and Ego4D columns).
        text_lmdb (`str` or `os.PathLike`, *optional*): Text store (key `query_id` -> npz `token_features`
            and `cls_features`/`eot_features`); when absent the query tables hold text only.
        train_splits, strict, metadata, max_shard_bytes, overwrite, progress: See `build_rgnet_dataset`.

    Returns:
        `dict`: The conversion summary.
    """
    _check_dataset_kind(dataset)
    if not annotation_files:
        raise ValueError("`annotation_files` must name at least one split.")
    rows_by_split = {
        split: original_annotation_rows(path, dataset=dataset) for split, path in annotation_files.items()
    }
    video_reader = LmdbNpzReader(video_lmdb)
    text_reader = LmdbNpzReader(text_lmdb) if text_lmdb is not None else None
    try:
        summary = build_rgnet_dataset(
            output_dir,
            rows_by_split,
            dataset=dataset,
            video_ids=video_reader.keys(),
            load_video=lambda key: original_video_features(video_reader.get(key), key),
            text_ids=text_reader.keys() if text_reader is not None else None,
            load_text=(lambda key: original_text_features(text_reader.get(key), key)) if text_reader else None,
            train_splits=train_splits,
            strict=strict,
            metadata={
                "dataset": dataset,
                "source": "original-layout",
                **(metadata or {}),
            },
            max_shard_bytes=max_shard_bytes,
            overwrite=overwrite,
            progress=progress,
        )
    finally:
        video_reader.close()
        if text_reader is not None:
            text_reader.close()
    return summary


__all__ = [
    "ConversionStats",
    "add_converter_arguments",
    "converter_options",
    "DEFAULT_MAX_SHARD_BYTES",
    "FilterResult",
    "LmdbNpzReader",
    "QUERY_COLUMN_TYPES",
    "RGNetDatasetWriter",
    "RGNetFeatureStore",
    "VideoLocation",
    "build_rgnet_dataset",
    "check_dataset_output_dir",
    "clean_query_row",
    "convert_original_layout",
    "default_is_train_split",
    "load_rgnet_dataset",
    "original_annotation_rows",
    "original_text_features",
    "original_video_features",
    "parse_split_paths",
    "read_jsonl",
    "read_manifest",
]
