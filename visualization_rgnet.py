"""Timeline plots of RGNet grounding results (matplotlib).

`plot_timeline` draws one query's result from `RGNetProcessor.post_process_video_grounding` over the video's time
axis: the window relevance scores `σ(ρ)` of every window (upper panel) and the top-ranked moments as bars, best at
the top, shaded by their fused score (lower panel); an optional ground-truth span is shaded across both panels.
`plot_timelines` stacks several queries of one video into one figure. Used by `scripts/ground_video.py` and the
quickstart. Figures are built with matplotlib's object API rather than pyplot, so plotting needs no display and
leaves no global state; `savefig` renders them with the Agg backend, and in a notebook a returned figure shows inline.

Example:

```python
>>> from visualization_rgnet import plot_timeline
>>> results = processor.post_process_video_grounding(outputs, inputs.window_metadata, video_features=video,
...                                                  sentence_embeddings=sentence)
>>> plot_timeline(results[0], inputs.window_metadata, query="A man opens a door.", ground_truth=(12.0, 15.5),
...               output_path="timeline.png")
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

# Colours: window scores, moments (a sequential map over the fused score) and the ground truth.
_WINDOW_COLOR = "#4c72b0"
_MOMENT_COLORMAP = "viridis_r"
_GROUND_TRUTH_COLOR = "#dd8452"
# Approximate width of one label character as a fraction of the time axis (8-point text on a 10-inch figure).
_LABEL_CHAR_FRACTION = 0.0085


def _as_numpy(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"`{name}` is required.")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _check_finite(values: np.ndarray, name: str) -> None:
    """A NaN or infinite score or second would be drawn as nothing, or (in the colour scale) spoil every bar."""
    if not np.isfinite(values).all():
        raise ValueError(f"`{name}` holds NaN or infinite values; a plot needs finite numbers.")


def _check_prediction(prediction: Any, name: str) -> None:
    if not isinstance(prediction, Mapping):  # e.g. the whole list of `post_process_video_grounding`
        raise ValueError(
            f"`{name}` must be one query's result (a dict of `post_process_video_grounding`'s list), got "
            f"{type(prediction).__name__}."
        )


def _check_ground_truth(ground_truth: Any, name: str) -> tuple[float, float] | None:
    """`ground_truth` as a `(start, end)` pair of floats (`None` stays `None`)."""
    if ground_truth is None:
        return None
    try:
        pair = tuple(float(value) for value in ground_truth)
    except (TypeError, ValueError):  # a bare number, or a text that is no number
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(value) for value in pair) or pair[0] > pair[1]:
        raise ValueError(f"`{name}` must be finite (start, end) seconds with start <= end, got {ground_truth!r}.")
    return pair


def _window_curve(prediction: Mapping[str, Any], window_metadata: Any) -> tuple[np.ndarray, np.ndarray]:
    """Window centres in seconds and `σ(ρ)` in window order (the prediction holds them in rank order)."""
    ranking = _as_numpy(prediction.get("window_ranking"), "prediction['window_ranking']").astype(np.int64)
    ranked_scores = _as_numpy(prediction.get("window_scores"), "prediction['window_scores']")
    offsets = np.asarray(window_metadata.window_offsets, dtype=np.float64)
    lengths = np.asarray(window_metadata.window_lengths, dtype=np.float64)
    if ranking.shape != ranked_scores.shape or ranking.shape != offsets.shape:
        raise ValueError(
            f"`prediction` ranks {ranking.size} windows but `window_metadata` describes {offsets.size}; pass the "
            "metadata of the batch the prediction came from."
        )
    if not np.array_equal(np.sort(ranking), np.arange(ranking.size)):  # else some windows would get no score
        raise ValueError(
            f"`prediction['window_ranking']` must order the windows 0 to {ranking.size - 1}, each once; it repeats "
            "or leaves out some."
        )
    _check_finite(ranked_scores, "prediction['window_scores']")
    scores = np.empty_like(ranked_scores)
    scores[ranking] = ranked_scores
    centers = (offsets + lengths / 2) * window_metadata.seconds_per_frame
    return centers, scores


def _draw_timeline(
    window_axis: Any,
    moment_axis: Any,
    prediction: Mapping[str, Any],
    window_metadata: Any,
    *,
    query: str | None,
    ground_truth: tuple[float, float] | None,
    top_k: int,
) -> None:
    """Draw one query into a (window panel, moment panel) pair of axes sharing the time axis (`ground_truth` checked
    by [`_check_ground_truth`])."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
    spans = _as_numpy(prediction.get("spans"), "prediction['spans']")
    scores = _as_numpy(prediction.get("scores"), "prediction['scores']").reshape(-1)
    if spans.size == 0:
        spans = spans.reshape(0, 2)
    if spans.ndim != 2 or spans.shape[1] != 2:
        raise ValueError(f"`prediction['spans']` must have shape (K, 2), got {spans.shape}.")
    if len(scores) != len(spans):
        raise ValueError(
            f"`prediction` holds {len(spans)} spans but {len(scores)} scores; `prediction['scores']` must hold one "
            "score per span."
        )
    _check_finite(spans, "prediction['spans']")
    _check_finite(scores, "prediction['scores']")
    spans, scores = spans[:top_k], scores[:top_k]
    centers, window_scores = _window_curve(prediction, window_metadata)
    duration = window_metadata.num_frames * window_metadata.seconds_per_frame

    # Upper panel: window relevance at each window's centre (windows overlap by half, so a line reads best).
    window_axis.plot(centers, window_scores, color=_WINDOW_COLOR, marker="o", markersize=3, linewidth=1.2)
    window_axis.set_ylim(-0.02, 1.02)
    window_axis.set_ylabel("window\nscore σ(ρ)")
    window_axis.grid(axis="y", alpha=0.3)
    window_axis.tick_params(labelbottom=False)
    if query:
        window_axis.set_title(query, loc="left", fontsize=10, parse_math=False)  # a "$" in a query is text

    # Lower panel: ranked moments, best at the top, darker for a higher fused score; labels beside the bars,
    # on whichever side has room.
    colormap = colormaps[_MOMENT_COLORMAP]
    norm = Normalize(
        vmin=float(scores.min()) if scores.size else 0.0, vmax=float(scores.max()) if scores.size else 1.0
    )
    for rank, ((start, end), score) in enumerate(zip(spans, scores, strict=True)):
        color = colormap(0.15 + 0.7 * float(norm(score))) if scores.size > 1 else colormap(0.85)
        moment_axis.barh(rank, max(end - start, duration * 2e-3), left=start, height=0.6, color=color)
        label = f"#{rank + 1}  {start:.1f}–{end:.1f} s  ({score:.2f})"
        label_width = len(label) * _LABEL_CHAR_FRACTION * duration
        if end + label_width < duration:
            position, align, text_color = end + 0.01 * duration, "left", "black"
        elif start - label_width > 0:
            position, align, text_color = start - 0.01 * duration, "right", "black"
        else:
            position, align, text_color = max(start, 0.0) + 0.01 * duration, "left", "white"
        moment_axis.text(position, rank, label, va="center", ha=align, fontsize=8, color=text_color, clip_on=True)
    moment_axis.set_yticks(range(len(spans)), [f"#{rank + 1}" for rank in range(len(spans))])
    moment_axis.set_ylim(max(len(spans), 1) - 0.4, -0.6)
    moment_axis.set_ylabel("top moments")
    moment_axis.set_xlabel("time (s)")
    moment_axis.set_xlim(0, duration)
    moment_axis.grid(axis="x", alpha=0.3)

    if ground_truth is not None:
        for axis in (window_axis, moment_axis):
            axis.axvspan(*ground_truth, color=_GROUND_TRUTH_COLOR, alpha=0.25, linewidth=0)
        window_axis.text(
            ground_truth[0], 1.0, " ground truth", color=_GROUND_TRUTH_COLOR, fontsize=8, va="top", ha="left"
        )


def _panel_heights(prediction: Mapping[str, Any], top_k: int) -> list[float]:
    num_moments = min(top_k, len(prediction.get("spans", ()))) if isinstance(top_k, int) else 1
    return [1.2, 0.3 * max(num_moments, 1) + 0.7]


def plot_timeline(
    prediction: Mapping[str, Any],
    window_metadata: Any,
    *,
    query: str | None = None,
    ground_truth: Sequence[float] | None = None,
    top_k: int = 5,
    output_path: str | os.PathLike | None = None,
) -> Figure:
    """Plot one query's grounding result on the video's time axis.

    Args:
        prediction (`Mapping`):
            One entry of `RGNetProcessor.post_process_video_grounding`'s list: `spans` `(K, 2)` start/end seconds
            ranked, `scores` `(K,)` fused scores, `window_ranking` `(W,)` and `window_scores` `(W,)` (rank order).
        window_metadata ([`RGNetWindowMetadata`]):
            `inputs.window_metadata` of the processor batch (window offsets, lengths, frames, seconds per frame).
        query (`str`, *optional*):
            Query text, shown as the title.
        ground_truth (`(float, float)`, *optional*):
            Start and end seconds of the annotated moment, shaded in both panels.
        top_k (`int`, *optional*, defaults to 5):
            Ranked moments drawn (fewer when the prediction holds fewer).
        output_path (`str` or `os.PathLike`, *optional*):
            Also save the figure there (150 dpi), in the format of its extension (PNG without one).

    Returns:
        `matplotlib.figure.Figure`: the figure (`figure.savefig(path)` saves it).

    Raises:
        ValueError: If `top_k` is not a positive integer, the prediction is malformed (spans not `(K, 2)`, not one
            score per span, a window ranking that is not a permutation, NaN or infinite values) or disagrees with
            the metadata, or `ground_truth` is not a finite `(start, end)` pair with `start <= end`.
    """
    _check_prediction(prediction, "prediction")
    ground_truth = _check_ground_truth(ground_truth, "ground_truth")
    return plot_timelines(
        [prediction],
        window_metadata,
        queries=None if query is None else [query],
        ground_truths=None if ground_truth is None else [ground_truth],
        top_k=top_k,
        output_path=output_path,
    )


def plot_timelines(
    predictions: Sequence[Mapping[str, Any]],
    window_metadata: Any,
    *,
    queries: Sequence[str] | None = None,
    ground_truths: Sequence[Sequence[float] | None] | None = None,
    top_k: int = 5,
    output_path: str | os.PathLike | None = None,
) -> Figure:
    """Plot several queries of one video into one figure, one pair of panels per query (see `plot_timeline`).

    Args:
        predictions (sequence of `Mapping`): `post_process_video_grounding`'s list, one entry per query.
        window_metadata ([`RGNetWindowMetadata`]): `inputs.window_metadata` of the processor batch.
        queries (sequence of `str`, *optional*): Query texts (titles), one per prediction.
        ground_truths (sequence of `(start, end)` or `None`, *optional*): Annotated moments, one per prediction.
        top_k (`int`, *optional*, defaults to 5): Ranked moments drawn per query.
        output_path (`str` or `os.PathLike`, *optional*): Also save the figure there (150 dpi), in the format of its
            extension (PNG without one).

    Returns:
        `matplotlib.figure.Figure`.

    Raises:
        ValueError: As `plot_timeline`, and when `predictions` is empty or a single result, or `queries` or
            `ground_truths` do not hold one entry per prediction.
    """
    if isinstance(predictions, Mapping):
        raise ValueError(
            "`predictions` must be a list of results, one per query; for a single result use `plot_timeline`."
        )
    if len(predictions) == 0:
        raise ValueError("`predictions` must hold at least one query's result.")
    for index, prediction in enumerate(predictions):
        _check_prediction(prediction, f"predictions[{index}]")
    for name, values in (("queries", queries), ("ground_truths", ground_truths)):
        if isinstance(values, str) or (values is not None and len(values) != len(predictions)):
            count = "a single string" if isinstance(values, str) else f"{len(values)} entries"
            raise ValueError(f"`{name}` must hold one entry per prediction; got {count} for {len(predictions)}.")
    if ground_truths is not None:
        ground_truths = [
            _check_ground_truth(value, f"ground_truths[{index}]") for index, value in enumerate(ground_truths)
        ]
    heights = [sum(_panel_heights(prediction, top_k)) + 0.5 for prediction in predictions]
    # A bare `Figure` (no pyplot): no global state or display needed, and `savefig` renders with Agg.
    figure = Figure(figsize=(10, sum(heights)), layout="constrained")
    subfigures = figure.subfigures(len(predictions), 1, height_ratios=heights, squeeze=False)[:, 0]
    for index, (prediction, subfigure) in enumerate(zip(predictions, subfigures, strict=True)):
        window_axis, moment_axis = subfigure.subplots(
            2, 1, sharex=True, height_ratios=_panel_heights(prediction, top_k)
        )
        _draw_timeline(
            window_axis,
            moment_axis,
            prediction,
            window_metadata,
            query=None if queries is None else queries[index],
            ground_truth=None if ground_truths is None else ground_truths[index],
            top_k=top_k,
        )
    if output_path is not None:
        figure.savefig(output_path, dpi=150)
    return figure


__all__ = ["plot_timeline", "plot_timelines"]
