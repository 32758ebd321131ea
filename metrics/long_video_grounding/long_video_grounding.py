"""Recall@K at temporal-IoU thresholds for long-video grounding (MAD, Ego4D-NLQ), as an `evaluate` metric.

The numbers reproduce the evaluators released with RGNet (spec §8) exactly, including their precision:

* **Temporal IoU** is intersection over hull, `max(0, min(e1, e2) - max(s1, s2)) / (max(e1, e2) - min(s1, s2))`.
  A zero-length hull (a point prediction on a point reference) is defined as IoU 0; the original divides 0 by 0.
* **Recall@K, IoU>θ**: a query is a hit when any of its first K ranked predictions has IoU strictly greater
  than θ; the recall is the mean of the hits over the queries.
* **MAD** (`"mad"`): IoU, threshold and mean in float32, only the first 100 predictions of a query are read.
  **Ego4D-NLQ** (`"ego4d"`): float64, all predictions read, plus `mIoU`, the mean IoU of the top-1 prediction.
* **Window recall** (diagnostic of the clip-retrieval stage): a hit at K when any of the K best-ranked windows
  overlaps the ground truth; always float32, as in the original window evaluator.

Every value is returned as a fraction in [0, 1] (the original prints percentages: multiply by 100).

Contents, in order: per-benchmark settings, span and window arithmetic (pure functions usable without
`evaluate`), readers of the original file formats, and the `evaluate.Metric` itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import evaluate
import numpy as np

logger = logging.getLogger(__name__)


_CITATION = """\
@inproceedings{hannan2024rgnet,
  title     = {{RGNet}: A Unified Clip Retrieval and Grounding Network for Long Videos},
  author    = {Hannan, Tanveer and Islam, Md Mohaiminul and Seidl, Thomas and Bertasius, Gedas},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024},
  note      = {arXiv:2312.06729}
}
"""

_DESCRIPTION = """\
Recall@K at temporal-IoU thresholds for natural-language grounding in long videos, with the conventions of the
MAD and Ego4D-NLQ evaluators released with RGNet. For every query the model gives a ranked list of predicted
moments `[start, end]` in seconds; a query counts as retrieved at (K, θ) when one of its first K predictions
overlaps the ground-truth moment with a temporal IoU strictly greater than θ. Config "mad" computes in float32
and reads only the first 100 predictions; config "ego4d" computes in float64 and adds the mean top-1 IoU
(`mIoU`). Optionally it also reports the recall of the window (clip) retrieval stage. Values are fractions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `list` of `float`): one entry per query: its predicted moments in rank
        order (best first), each a row `[start, end]` or `[start, end, score, ...]` in seconds. Columns after
        the second are not read (the order of the rows is the ranking), so NaN scores are harmless. An empty
        list is a miss at every K.
    references (`list` of `list` of `float`): one `[start, end]` per query, in seconds, `start <= end`.
    window_rankings (`list` of `list` of `int`, *optional*): one entry per query: distinct window indices
        (`>= 0`), best first. When given, window recall `WindowR@K` is added. Window `w` covers frames
        `[(w - 1) * stride, (w - 1) * stride + window_length)`; the positive windows of a reference are those
        overlapping it, for the default `stride = window_length / 2` (even length)
        `floor(start / seconds_per_frame / stride) ... ceil(end / seconds_per_frame / stride)`, both included.
    iou_thresholds (`float` or `list` of `float`, *optional*): θ values in [0, 1]; a single number means a
        one-element list (`0.5` is `[0.5]`). Defaults: mad 0.1/0.3/0.5, ego4d 0.3/0.5.
    top_k (`int` or `list` of `int`, *optional*): K values of Recall@K; a single K means a one-element list
        (`5` is `[5]`). Default 1/5/10/50/100 for both configs.
    window_top_k (`int` or `list` of `int`, *optional*): K values of window recall, a single K as for `top_k`.
        Defaults: mad 1/5/10/30/50/100/200, ego4d 1/5/10/20/30/50.
    window_length (`int`, *optional*): window length in frames. Defaults: mad 900, ego4d 90.
    window_stride (`int`, *optional*): distance between window starts in frames, smaller than `window_length`
        (as in `RGNetConfig`). Default half the window length.
    seconds_per_frame (`float`, *optional*): duration of one feature frame. Defaults: mad 0.2, ego4d 0.535.

Returns:
    `dict` of `float`, all fractions in [0, 1]:
        `R@{K},IoU={θ}` for every K then every θ (e.g. `R@1,IoU=0.5`); `mIoU` (ego4d only);
        `WindowR@{K}` for every window K when `window_rankings` is given.

Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/long_video_grounding", "ego4d")
    >>> metric.compute(
    ...     predictions=[[[2.0, 4.0, 0.9], [0.0, 4.0, 0.5]]], references=[[2.0, 5.0]], top_k=[1, 5]
    ... )
    {'R@1,IoU=0.3': 1.0, 'R@1,IoU=0.5': 1.0, 'R@5,IoU=0.3': 1.0, 'R@5,IoU=0.5': 1.0, 'mIoU': 0.6666666666666666}
"""

# The original window evaluator computes its recall in float32 for both benchmarks.
_WINDOW_RECALL_DTYPE = np.float32


# ---- Settings per benchmark (spec §8) ----


def _is_list_like(value) -> bool:
    return isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes)


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _as_tuple(values) -> tuple:
    # A single value is a one-element list: `top_k=5` means `top_k=[5]`.
    if isinstance(values, np.ndarray) and values.ndim == 0:
        return (values.item(),)
    return tuple(values) if _is_list_like(values) else (values,)


def _positive_ints(values, name: str, distinct: bool = True) -> tuple[int, ...]:
    items = _as_tuple(values)
    if not items or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in items):
        raise ValueError(f"{name} must be a positive integer or a non-empty list of them; got {values!r}")
    if distinct:
        _check_distinct_keys([str(int(v)) for v in items], name, values)
    return tuple(int(v) for v in items)


def _unit_interval_floats(values, name: str, distinct: bool = True) -> tuple[float, ...]:
    items = _as_tuple(values)
    if not items or not all(_is_number(v) and 0.0 <= v <= 1.0 for v in items):
        raise ValueError(f"{name} must be a number in [0, 1] or a non-empty list of them; got {values!r}")
    if distinct:
        _check_distinct_keys([f"{float(v):g}" for v in items], name, values)
    return tuple(float(v) for v in items)


def _check_seconds_per_frame(seconds_per_frame) -> None:
    if not (_is_number(seconds_per_frame) and np.isfinite(seconds_per_frame) and seconds_per_frame > 0):
        raise ValueError(f"seconds_per_frame must be a positive finite number; got {seconds_per_frame!r}")


def _check_distinct_keys(keys: list[str], name: str, values) -> None:
    # Each value names its own result (`R@{K},IoU={θ:g}`): two values with one name would leave one result.
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{name} must hold distinct values (as the result keys print them); got {values!r}")


@dataclasses.dataclass(frozen=True)
class GroundingMetricSettings:
    """Conventions of one benchmark's evaluator.

    Attributes:
        iou_thresholds (`tuple[float, ...]`): θ values; a prediction hits when its IoU is strictly greater. Like
            `top_k` and `window_top_k`, it may be given as a single value, which means a one-element tuple.
        top_k (`tuple[int, ...]`): K values of Recall@K.
        iou_dtype (`str`): `"float32"` or `"float64"`: precision of the IoU, of θ in the comparison and of the
            recall mean. The spans are rounded to it before any arithmetic.
        max_predictions (`int | None`): how many ranked predictions of a query are read; `None` reads all. A K
            above it sees no more predictions.
        report_mean_iou (`bool`): whether `mIoU` (mean IoU of the top-1 prediction) is returned.
        seconds_per_frame (`float`): duration of one feature frame, for window recall.
        window_length (`int`): window length in frames, for window recall.
        window_stride (`int | None`): distance between window starts in frames, smaller than `window_length`;
            `None` means half a window.
        window_top_k (`tuple[int, ...]`): K values of window recall.
    """

    iou_thresholds: tuple[float, ...]
    top_k: tuple[int, ...]
    iou_dtype: str
    max_predictions: int | None
    report_mean_iou: bool
    seconds_per_frame: float
    window_length: int
    window_top_k: tuple[int, ...]
    window_stride: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "iou_thresholds", _unit_interval_floats(self.iou_thresholds, "iou_thresholds"))
        object.__setattr__(self, "top_k", _positive_ints(self.top_k, "top_k"))
        object.__setattr__(self, "window_top_k", _positive_ints(self.window_top_k, "window_top_k"))
        if self.iou_dtype not in ("float32", "float64"):
            raise ValueError(f"iou_dtype must be 'float32' or 'float64'; got {self.iou_dtype!r}")
        if self.max_predictions is not None:
            _positive_ints([self.max_predictions], "max_predictions")
        _positive_ints([self.window_length], "window_length")
        if self.window_stride is not None:
            _positive_ints([self.window_stride], "window_stride")
            if self.window_stride >= self.window_length:
                # As `RGNetConfig` and the processor: window w starts at (w - 1) * stride, so window 0 would be empty.
                raise ValueError(
                    f"window_stride ({self.window_stride}) must be smaller than window_length ({self.window_length})"
                )
        elif self.window_length < 2:
            raise ValueError(
                f"window_length must be at least 2 when window_stride is not set; got {self.window_length}"
            )
        _check_seconds_per_frame(self.seconds_per_frame)

    @property
    def resolved_window_stride(self) -> int:
        """Distance between window starts in frames (half a window unless set)."""
        return self.window_stride if self.window_stride is not None else self.window_length // 2

    def with_overrides(self, **overrides) -> GroundingMetricSettings:
        """Returns a copy with the fields given a value other than `None` replaced (and validated)."""
        return dataclasses.replace(self, **{name: value for name, value in overrides.items() if value is not None})


GROUNDING_METRIC_SETTINGS: dict[str, GroundingMetricSettings] = {
    # MAD test: the evaluator works on float32 tensors and keeps the first 100 predictions of each query.
    "mad": GroundingMetricSettings(
        iou_thresholds=(0.1, 0.3, 0.5),
        top_k=(1, 5, 10, 50, 100),
        iou_dtype="float32",
        max_predictions=100,
        report_mean_iou=False,
        seconds_per_frame=0.2,
        window_length=900,
        window_top_k=(1, 5, 10, 30, 50, 100, 200),
    ),
    # Ego4D-NLQ val: the official NLQ evaluator, numpy float64, every prediction read.
    "ego4d": GroundingMetricSettings(
        iou_thresholds=(0.3, 0.5),
        top_k=(1, 5, 10, 50, 100),
        iou_dtype="float64",
        max_predictions=None,
        report_mean_iou=True,
        seconds_per_frame=0.535,
        window_length=90,
        window_top_k=(1, 5, 10, 20, 30, 50),
    ),
}


def get_metric_settings(name: str, argument: str = "config_name") -> GroundingMetricSettings:
    """Returns the settings of a benchmark by name.

    Args:
        name (`str`): `"mad"` or `"ego4d"`.
        argument (`str`, *optional*): name of the caller's argument, for the error message.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if name not in GROUNDING_METRIC_SETTINGS:
        raise ValueError(f"{argument} must be one of {sorted(GROUNDING_METRIC_SETTINGS)}; got {name!r}")
    return GROUNDING_METRIC_SETTINGS[name]


# ---- Span and window arithmetic ----


def temporal_iou(spans, reference, dtype="float64") -> np.ndarray:
    """Temporal IoU (intersection over hull) of spans with a reference, computed in `dtype`.

    Args:
        spans (`array-like` of shape `(..., 2)`): `[start, end]` rows, `start <= end` (not checked here).
        reference (`array-like` of shape `(..., 2)`): `[start, end]`, broadcastable against `spans`.
        dtype (`str` or `np.dtype`, *optional*, defaults to `"float64"`): the inputs are rounded to it and
            every operation runs in it (`"float32"` reproduces the MAD evaluator bit for bit).

    Returns:
        `np.ndarray` of shape `(...)` in `dtype`: `max(0, min(e1, e2) - max(s1, s2)) / (max(e1, e2) - min(s1, s2))`,
        and 0 where the hull has zero length (a point on the same point; the original gives NaN there).

    Raises:
        ValueError: when the last dimension of `spans` or `reference` is not 2.
    """
    spans = np.asarray(spans, dtype=dtype)
    reference = np.asarray(reference, dtype=dtype)
    for name, array in (("spans", spans), ("reference", reference)):
        if array.ndim == 0 or array.shape[-1] != 2:
            raise ValueError(f"{name} must have a last dimension of 2 (start, end); got shape {array.shape}")
    start, end = spans[..., 0], spans[..., 1]
    reference_start, reference_end = reference[..., 0], reference[..., 1]
    intersection = np.maximum(np.minimum(end, reference_end) - np.maximum(start, reference_start), 0)
    hull = np.maximum(end, reference_end) - np.minimum(start, reference_start)
    has_hull = hull > 0
    return np.where(has_hull, intersection / np.where(has_hull, hull, 1), 0).astype(dtype)


def recall_at_k(
    ious: Sequence[np.ndarray], iou_thresholds: Sequence[float], top_k: Sequence[int], dtype="float64"
) -> np.ndarray:
    """Recall@K at IoU thresholds from the ranked IoUs of each query.

    Args:
        ious (`list` of `np.ndarray` of shape `(P_q,)`): per query, the IoU of each prediction in rank order;
            `P_q` may differ between queries and may be 0 (a miss).
        iou_thresholds (`list` of `float`): θ in [0, 1]; a hit needs IoU strictly greater than θ, compared in
            `dtype`.
        top_k (`list` of `int`): K values, positive; a query with fewer than K predictions uses all of them.
        dtype (`str` or `np.dtype`, *optional*, defaults to `"float64"`): precision of the comparison and mean.

    Returns:
        `np.ndarray` of shape `(len(iou_thresholds), len(top_k))` in `dtype`: the fraction of queries hit.

    Raises:
        ValueError: when `ious` is empty, a K is not a positive integer or a θ is not in [0, 1].
    """
    if len(ious) == 0:
        raise ValueError("ious must hold at least one query")
    # A K of 0 would index the last column (every prediction read), a NaN θ would never hit: both silently wrong.
    top_k = _positive_ints(top_k, "top_k", distinct=False)
    iou_thresholds = _unit_interval_floats(iou_thresholds, "iou_thresholds", distinct=False)
    dtype = np.dtype(dtype)
    num_queries = len(ious)
    max_length = max(len(query_ious) for query_ious in ious)
    # (Q, P) padded with -inf, so padding never hits; then the best IoU among the first p + 1 predictions.
    padded = np.full((num_queries, max(max_length, 1)), -np.inf, dtype=dtype)
    for row, query_ious in enumerate(ious):
        padded[row, : len(query_ious)] = query_ious
    best_so_far = np.maximum.accumulate(padded, axis=1)
    recall = np.empty((len(iou_thresholds), len(top_k)), dtype=dtype)
    for column, k in enumerate(top_k):
        best = best_so_far[:, min(k, padded.shape[1]) - 1]
        for row, threshold in enumerate(iou_thresholds):
            num_hits = np.count_nonzero(best > dtype.type(threshold))
            recall[row, column] = dtype.type(num_hits) / dtype.type(num_queries)
    return recall


def mean_top1_iou(ious: Sequence[np.ndarray], dtype="float64") -> float:
    """Mean IoU of the top-ranked prediction of each query (Ego4D's `mIoU`); a query without predictions counts 0.

    Args:
        ious (`list` of `np.ndarray` of shape `(P_q,)`): per query, the IoU of each prediction in rank order.
        dtype (`str` or `np.dtype`, *optional*, defaults to `"float64"`): precision of the mean.

    Returns:
        `float`: the mean (numpy's pairwise summation, as the original).

    Raises:
        ValueError: when `ious` is empty.
    """
    if len(ious) == 0:
        raise ValueError("ious must hold at least one query")
    top1 = np.array([query_ious[0] if len(query_ious) else 0.0 for query_ious in ious], dtype=dtype)
    return float(np.mean(top1))


def positive_window_range(
    references, seconds_per_frame: float, window_stride: int, window_length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """First and last window index that overlap each reference moment (both included).

    Window `w` covers frames `[(w - 1) * stride, (w - 1) * stride + window_length)` from frame 0 on (window 0 is the
    part of that span at the start), so the windows overlapping frames `[a, b]` are `first ... ceil(b / stride)`
    with `first = floor((a - window_length mod stride) / stride) + 2 - floor(window_length / stride)` (at least 0):
    `floor(a / stride)` for the recipes' `window_length = 2 * stride`. The seconds are converted to frames first
    (`seconds / seconds_per_frame`, float64), then divided by the stride.

    Args:
        references (`array-like` of shape `(Q, 2)`): `[start, end]` in seconds.
        seconds_per_frame (`float`): duration of one feature frame.
        window_stride (`int`): distance between window starts in frames.
        window_length (`int`, *optional*): window length in frames, more than `window_stride`; defaults to
            `2 * window_stride`.

    Returns:
        `tuple` of two `np.ndarray` of shape `(Q,)`, int64: first and last positive window index.

    Raises:
        ValueError: when `seconds_per_frame` is not a positive finite number, `window_stride` or `window_length` is
            not a positive integer, or `window_length` is not larger than `window_stride`.
    """
    _check_seconds_per_frame(seconds_per_frame)
    _positive_ints([window_stride], "window_stride")
    window_length = 2 * window_stride if window_length is None else window_length
    _positive_ints([window_length], "window_length")
    if window_length <= window_stride:
        raise ValueError(f"window_length ({window_length}) must be larger than window_stride ({window_stride})")
    frames = np.asarray(references, dtype=np.float64).reshape(-1, 2) / seconds_per_frame
    whole, remainder = divmod(window_length, window_stride)
    first = np.floor((frames[:, 0] - remainder) / window_stride).astype(np.int64) + 2 - whole
    last = np.ceil(frames[:, 1] / window_stride).astype(np.int64)
    return np.maximum(first, 0), last


def window_recall_at_k(
    window_rankings, references, *, seconds_per_frame, window_stride, top_k, window_length=None
) -> np.ndarray:
    """Recall@K of the window (clip) retrieval stage, in float32 as the original window evaluator.

    Args:
        window_rankings (`list` of `list` of `int`): per query, distinct window indices `>= 0` best first
            (may be empty).
        references (`array-like` of shape `(Q, 2)`): ground-truth `[start, end]` in seconds.
        seconds_per_frame (`float`): duration of one feature frame.
        window_stride (`int`): distance between window starts in frames.
        top_k (`list` of `int`): K values.
        window_length (`int`, *optional*): window length in frames; defaults to `2 * window_stride`.

    Returns:
        `np.ndarray` of shape `(len(top_k),)`, float32: fraction of queries with a positive window among the
        first K (see `positive_window_range`).

    Raises:
        ValueError: when `window_rankings` is malformed (a negative or repeated window index included) or its
            length differs from `references`, when a K is not a positive integer, or on a bad window geometry (see
            `positive_window_range`).
    """
    top_k = _positive_ints(top_k, "top_k", distinct=False)
    references = np.asarray(references, dtype=np.float64).reshape(-1, 2)
    rankings = _window_rankings(window_rankings, len(references))
    if len(rankings) == 0:
        raise ValueError("window_rankings must hold at least one query")
    first, last = positive_window_range(references, seconds_per_frame, window_stride, window_length)
    # Rank (0-based) of the first positive window of each query; a query without one never hits.
    never = np.iinfo(np.int64).max
    first_positive_rank = np.array(
        [
            int(np.argmax(is_positive)) if is_positive.any() else never
            for is_positive in (
                (ranking >= lo) & (ranking <= hi) for ranking, lo, hi in zip(rankings, first, last, strict=True)
            )
        ],
        dtype=np.int64,
    )
    hits = first_positive_rank[None, :] < np.asarray(top_k, dtype=np.int64)[:, None]  # (len(top_k), Q)
    return hits.sum(axis=1).astype(_WINDOW_RECALL_DTYPE) / _WINDOW_RECALL_DTYPE(len(rankings))


# ---- Input checks ----


def _numbers(values) -> np.ndarray | None:
    """`values` (nested lists or an array) as float64, `None` entries as NaN; `None` when they are not all numbers:
    text or booleans (e.g. a column read as strings, a mask passed by mistake), or ragged rows."""
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError):  # ragged rows
        return None
    if raw.dtype.kind in "iuf":
        return raw.astype(np.float64, copy=False)
    if raw.dtype.kind != "O" or not all(value is None or _is_number(value) for value in raw.ravel()):
        return None
    return raw.astype(np.float64)


def _ranked_spans(rows, argument: str) -> np.ndarray:
    """Validates one query's ranked prediction rows and returns their `[start, end]` columns, `(P, 2)` float64."""
    if not _is_list_like(rows):
        raise ValueError(f"{argument} must be a list of [start, end, ...] rows; got {type(rows).__name__}")
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    table = _numbers(rows)  # `None` for ragged rows ([s, e] beside [s, e, score]) or a non-numeric entry
    if table is None or table.ndim != 2:
        table = np.stack([_row_span(row, f"{argument}[{index}]") for index, row in enumerate(rows)])
    elif table.shape[1] < 2:
        raise ValueError(f"{argument}[0] must be a row [start, end, ...] of at least 2 numbers; got {rows[0]!r}")
    spans = table[:, :2]
    _check_spans(spans, argument)
    return spans


def _ranked_span_lists(predictions) -> list[np.ndarray]:
    """Validates the predictions of all queries and returns each query's `(P_q, 2)` `[start, end]` columns."""
    if not _is_list_like(predictions):
        raise ValueError(
            f"predictions must be a list with one list of rows per query; got {type(predictions).__name__}"
        )
    return [_ranked_spans(rows, f"predictions[{index}]") for index, rows in enumerate(predictions)]


def _row_span(row, argument: str) -> np.ndarray:
    values = _numbers(row)
    if values is None or values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(f"{argument} must be a row [start, end, ...] of at least 2 numbers; got {row!r}")
    return values[:2]


def _check_spans(spans: np.ndarray, argument: str) -> None:
    """Raises a ValueError naming the first `[start, end]` row of `spans` that is not finite or reversed."""
    not_finite = ~np.isfinite(spans).all(axis=1)
    if not_finite.any():
        index = int(np.argmax(not_finite))
        raise ValueError(f"{argument}[{index}] must have a finite start and end; got {spans[index].tolist()}")
    reversed_rows = spans[:, 1] < spans[:, 0]
    if reversed_rows.any():
        index = int(np.argmax(reversed_rows))
        raise ValueError(f"{argument}[{index}] must satisfy start <= end; got {spans[index].tolist()}")


def _reference_spans(references) -> np.ndarray:
    """Validates the references and returns them as `(Q, 2)` float64."""
    if not _is_list_like(references):
        raise ValueError(f"references must be a list of [start, end] pairs; got {type(references).__name__}")
    if len(references) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    spans = _numbers(references)
    if spans is None or spans.ndim != 2 or spans.shape[1] != 2:
        for index, reference in enumerate(references):
            pair = _numbers(reference)
            if pair is None or pair.shape != (2,):
                raise ValueError(f"references[{index}] must be a pair [start, end] of numbers; got {reference!r}")
    _check_spans(spans, "references")
    return spans


def _window_rankings(window_rankings, num_queries: int) -> list[np.ndarray]:
    """Validates the window rankings and returns one int64 array per query."""
    if not _is_list_like(window_rankings) or len(window_rankings) != num_queries:
        length = len(window_rankings) if _is_list_like(window_rankings) else type(window_rankings).__name__
        raise ValueError(f"window_rankings must hold one ranking per query ({num_queries}); got {length}")
    rankings = []
    for index, ranking in enumerate(window_rankings):
        values = np.asarray(ranking) if _is_list_like(ranking) else None
        valid = values is not None and values.ndim == 1
        if valid and values.size and values.dtype.kind not in "iu":
            valid = values.dtype.kind == "f" and bool(np.all(np.isfinite(values) & (values == np.round(values))))
        if valid and values.size and values.dtype.kind in "uf":
            valid = bool(values.max() <= np.iinfo(np.int64).max)  # beyond it the int64 cast wraps or saturates
        if not valid:
            raise ValueError(f"window_rankings[{index}] must be a list of window indices; got {ranking!r}")
        rankings.append(values.astype(np.int64))
    if not rankings:
        return rankings
    # All rows at once: a negative id, or an id twice in a row, would count a window that does not exist or twice.
    lengths = np.array([len(ranking) for ranking in rankings])
    flat = np.concatenate(rankings)
    rows = np.repeat(np.arange(len(rankings)), lengths)
    negative = flat < 0
    if negative.any():
        position = int(np.argmax(negative))
        row = int(rows[position])
        raise ValueError(
            f"window_rankings[{row}] must hold window indices >= 0; got {int(flat[position])} at position "
            f"{position - int(lengths[:row].sum())}"
        )
    order = np.lexsort((flat, rows))  # by row, then window id
    sorted_rows, sorted_ids = rows[order], flat[order]
    repeated = (sorted_rows[1:] == sorted_rows[:-1]) & (sorted_ids[1:] == sorted_ids[:-1])
    if repeated.any():
        first = int(np.argmax(repeated))  # the lowest row holding a repeat, its lowest repeated id
        raise ValueError(
            f"window_rankings[{int(sorted_rows[first])}] must hold distinct window indices; window "
            f"{int(sorted_ids[first])} appears more than once"
        )
    return rankings


# ---- All metrics at once ----


def compute_grounding_metrics(
    predictions, references, *, settings: str | GroundingMetricSettings = "mad", window_rankings=None
) -> dict[str, float]:
    """Computes every metric of a benchmark (the arithmetic behind `LongVideoGrounding.compute`).

    Args:
        predictions (`list` of `list` of rows): per query, ranked rows `[start, end, ...]` in seconds.
        references (`list` of `[start, end]`): per query, the ground truth in seconds.
        settings (`str` or `GroundingMetricSettings`, *optional*, defaults to `"mad"`): `"mad"`, `"ego4d"`, or
            settings built with `GROUNDING_METRIC_SETTINGS[name].with_overrides(...)`.
        window_rankings (`list` of `list` of `int`, *optional*): per query, window indices best first; adds
            `WindowR@K`.

    Returns:
        `dict[str, float]`, fractions in [0, 1]: `R@{K},IoU={θ}` (K outer, θ inner), then `mIoU` when the settings
        report it, then `WindowR@{K}` when `window_rankings` is given.

    Raises:
        ValueError: for an unknown settings name, a length mismatch, or a malformed row, reference or ranking;
            the message names the argument and the index.
    """
    if isinstance(settings, str):
        settings = get_metric_settings(settings, argument="settings")
    elif not isinstance(settings, GroundingMetricSettings):
        raise ValueError(
            f"settings must be one of {sorted(GROUNDING_METRIC_SETTINGS)} or a GroundingMetricSettings; "
            f"got {type(settings).__name__}"
        )
    spans = _ranked_span_lists(predictions)
    reference_spans = _reference_spans(references)
    if len(predictions) != len(reference_spans):
        raise ValueError(
            "predictions and references must hold one entry per query; "
            f"got {len(predictions)} predictions and {len(reference_spans)} references"
        )
    if len(predictions) == 0:
        raise ValueError("predictions must hold at least one query")
    if settings.max_predictions is not None and max(settings.top_k) > settings.max_predictions:
        logger.warning(
            "top_k %s exceeds max_predictions=%d: only the first %d predictions of a query are read",
            settings.top_k,
            settings.max_predictions,
            settings.max_predictions,
        )

    spans = [query_spans[: settings.max_predictions] for query_spans in spans]
    # One vectorised IoU over all queries' predictions, then split back per query.
    counts = np.array([len(query_spans) for query_spans in spans])
    all_ious = temporal_iou(
        np.concatenate(spans, axis=0), np.repeat(reference_spans, counts, axis=0), dtype=settings.iou_dtype
    )
    ious = np.split(all_ious, np.cumsum(counts)[:-1])

    recall = recall_at_k(ious, settings.iou_thresholds, settings.top_k, dtype=settings.iou_dtype)
    results = {
        f"R@{k},IoU={threshold:g}": float(recall[row, column])
        for column, k in enumerate(settings.top_k)
        for row, threshold in enumerate(settings.iou_thresholds)
    }
    if settings.report_mean_iou:
        results["mIoU"] = mean_top1_iou(ious, dtype=settings.iou_dtype)
    if window_rankings is not None:
        window_recall = window_recall_at_k(
            window_rankings,
            reference_spans,
            seconds_per_frame=settings.seconds_per_frame,
            window_stride=settings.resolved_window_stride,
            top_k=settings.window_top_k,
            window_length=settings.window_length,
        )
        results.update(
            {f"WindowR@{k}": float(value) for k, value in zip(settings.window_top_k, window_recall, strict=True)}
        )
    return results


# ---- Readers of the original file formats ----


def _read_json_source(source):
    """Parses a `.json`/`.jsonl` file when `source` is a path; returns any other object unchanged."""
    if not isinstance(source, str | os.PathLike):
        return source
    path = Path(source)
    with path.open(encoding="utf-8") as handle:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in handle if line.strip()]
        return json.load(handle)


def _field(record, key: str, argument: str, index: int):
    if not isinstance(record, Mapping) or key not in record:
        raise ValueError(f"{argument}[{index}] must be a mapping with key {key!r}; got {str(record)[:200]}")
    return record[key]


def _unique_insert(table: dict, key: str, value, argument: str) -> None:
    if key in table:
        raise ValueError(f"{argument} holds query {key!r} twice")
    table[key] = value


def load_mad_predictions(source) -> dict[str, list]:
    """Reads the original MAD output: rows `{query_id, video_id, predicted_times}`.

    Args:
        source (`str`, `os.PathLike`, or `list` of `dict`): a `.jsonl` (one row a line) or `.json` (a list) file,
            or the rows themselves. `predicted_times` holds ranked rows such as
            `[start, end, proposal, matching, fusion]`.

    Returns:
        `dict[str, list]`: `query_id` to its ranked rows, in file order.
    """
    records = _read_json_source(source)
    predictions: dict[str, list] = {}
    for index, record in enumerate(records):
        query_id = str(_field(record, "query_id", "source", index))
        _unique_insert(predictions, query_id, _field(record, "predicted_times", "source", index), "source")
    return predictions


def load_mad_ground_truth(source) -> dict[str, list[float]]:
    """Reads MAD ground truth: annotation rows `{query_id, ..., timestamps}` or the official annotation object.

    Args:
        source (`str`, `os.PathLike`, `list` of `dict`, or `dict`): a `.jsonl`/`.json` file of annotation rows
            (spec §9.1), or the official MAD layout `{query_id: {sentence, movie, movie_duration, timestamps}}`,
            or those objects already parsed.

    Returns:
        `dict[str, list[float]]`: `query_id` to `[start, end]` in seconds.
    """
    records = _read_json_source(source)
    if isinstance(records, Mapping):
        records = [{"query_id": query_id, **annotation} for query_id, annotation in records.items()]
    ground_truth: dict[str, list[float]] = {}
    for index, record in enumerate(records):
        query_id = str(_field(record, "query_id", "source", index))
        _unique_insert(ground_truth, query_id, list(_field(record, "timestamps", "source", index)), "source")
    return ground_truth


def load_ego4d_predictions(source) -> dict[str, list]:
    """Reads an Ego4D-NLQ submission `{version, challenge, results: [{clip_uid, annotation_uid, query_idx,
    predicted_times}]}`.

    Args:
        source (`str`, `os.PathLike`, `dict`, or `list` of `dict`): the submission file, the parsed submission,
            or its `results` list.

    Returns:
        `dict[str, list]`: query id `"{annotation_uid}_{query_idx}"` (spec §9.1) to its ranked rows, in file order.
    """
    submission = _read_json_source(source)
    results = submission.get("results") if isinstance(submission, Mapping) else submission
    if not _is_list_like(results):
        raise ValueError("source must be an Ego4D-NLQ submission with a 'results' list")
    predictions: dict[str, list] = {}
    for index, record in enumerate(results):
        annotation_uid = _field(record, "annotation_uid", "source['results']", index)
        query_index = _field(record, "query_idx", "source['results']", index)
        rows = _field(record, "predicted_times", "source['results']", index)
        _unique_insert(predictions, f"{annotation_uid}_{query_index}", rows, "source")
    return predictions


def load_ego4d_nlq_ground_truth(source) -> dict[str, list[float]]:
    """Reads the official Ego4D-NLQ layout `videos -> clips -> annotations -> language_queries`.

    Args:
        source (`str`, `os.PathLike`, or `dict`): e.g. `nlq_val.json`, or its parsed content.

    Returns:
        `dict[str, list[float]]`: query id `"{annotation_uid}_{k}"` (`k` = index in `language_queries`) to
        `[clip_start_sec, clip_end_sec]`, for every query (also those a submission leaves out).
    """
    data = _read_json_source(source)
    if not isinstance(data, Mapping) or "videos" not in data:
        raise ValueError("source must be an Ego4D-NLQ annotation file with a 'videos' list")
    ground_truth: dict[str, list[float]] = {}
    for video in data["videos"]:
        for clip in video["clips"]:
            for annotation in clip["annotations"]:
                for query_index, query in enumerate(annotation["language_queries"]):
                    span = [query["clip_start_sec"], query["clip_end_sec"]]
                    _unique_insert(ground_truth, f"{annotation['annotation_uid']}_{query_index}", span, "source")
    return ground_truth


def align_predictions_and_references(
    predictions: Mapping[str, list], references: Mapping[str, list[float]]
) -> tuple[list[str], list[list], list[list[float]]]:
    """Pairs predictions with ground truth by query id, in prediction order, for `compute`.

    Only predicted queries are evaluated (the original Ego4D convention: ground-truth queries without a prediction
    are not counted); a predicted query without ground truth is an error.

    Args:
        predictions (`Mapping[str, list]`): query id to ranked rows (e.g. from `load_mad_predictions`).
        references (`Mapping[str, list[float]]`): query id to `[start, end]` (e.g. from `load_mad_ground_truth`).

    Returns:
        `tuple`: query ids, their ranked rows, and their `[start, end]` references, aligned.

    Raises:
        ValueError: naming `references` and the query when a predicted query has no ground truth.
    """
    missing = [query_id for query_id in predictions if query_id not in references]
    if missing:
        raise ValueError(f"references has no ground truth for {len(missing)} predicted queries, e.g. {missing[0]!r}")
    query_ids = list(predictions)
    return query_ids, [predictions[q] for q in query_ids], [list(references[q]) for q in query_ids]


# ---- The evaluate module ----


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LongVideoGrounding(evaluate.Metric):
    """Recall@K at temporal-IoU thresholds with the MAD (`"mad"`) or Ego4D-NLQ (`"ego4d"`) conventions.

    Load it with `evaluate.load("metrics/long_video_grounding", "mad")` (or an absolute path to this folder); a
    config name is required because the two benchmarks differ in precision, thresholds and predictions read.
    """

    def _info(self) -> evaluate.MetricInfo:
        get_metric_settings(self.config_name, argument="config_name")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            codebase_urls=["https://github.com/Tanveer81/RGNet"],
            reference_urls=["https://arxiv.org/abs/2312.06729"],
        )

    # Arrow would silently turn text ("0.5") or booleans into numbers as it stores the inputs: they are checked as
    # given first (with the errors of `compute_grounding_metrics`, indices relative to the batch).
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of queries: `predictions` (ranked `[start, end, ...]` rows per query) and `references` (one
        `[start, end]` per query), checked as given.
        """
        # Both are required (a missing one would end in a TypeError inside `evaluate`). Other array types (tensors,
        # pandas) are checked after Arrow has turned them into lists, at `compute`.
        if predictions is None or _is_list_like(predictions):
            _ranked_span_lists(predictions)
        if references is None or _is_list_like(references):
            _reference_spans(references)
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one query: `prediction` (its ranked `[start, end, ...]` rows) and `reference` (`[start, end]`), checked
        as given.
        """
        # Both are required: a missing one would be stored as None and fail only at `compute`, at another index.
        if prediction is None or _is_list_like(prediction):
            _ranked_spans(prediction, "prediction")
        if reference is None or _is_list_like(reference):
            _reference_spans([reference])
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        window_rankings=None,
        iou_thresholds=None,
        top_k=None,
        window_top_k=None,
        window_length=None,
        window_stride=None,
        seconds_per_frame=None,
    ) -> dict[str, float]:
        settings = get_metric_settings(self.config_name).with_overrides(
            iou_thresholds=iou_thresholds,
            top_k=top_k,
            window_top_k=window_top_k,
            window_length=window_length,
            window_stride=window_stride,
            seconds_per_frame=seconds_per_frame,
        )
        return compute_grounding_metrics(predictions, references, settings=settings, window_rankings=window_rankings)


__all__ = [
    "GROUNDING_METRIC_SETTINGS",
    "GroundingMetricSettings",
    "LongVideoGrounding",
    "align_predictions_and_references",
    "compute_grounding_metrics",
    "get_metric_settings",
    "load_ego4d_nlq_ground_truth",
    "load_ego4d_predictions",
    "load_mad_ground_truth",
    "load_mad_predictions",
    "mean_top1_iou",
    "positive_window_range",
    "recall_at_k",
    "temporal_iou",
    "window_recall_at_k",
]
