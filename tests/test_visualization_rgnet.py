"""`visualization_rgnet`: the timeline plots refuse malformed results by name instead of drawing garbage or failing
deep inside numpy or matplotlib (the drawing itself on a real model's result is tested in `test_own_video.py`)."""

import math

import numpy as np
import pytest
import torch

from processing_rgnet import RGNetWindowMetadata

pytest.importorskip("matplotlib")

from visualization_rgnet import plot_timeline, plot_timelines  # noqa: E402


@pytest.fixture
def metadata():
    # Three windows of a 30-frame video at 0.5 s per frame (15 s).
    return RGNetWindowMetadata(
        window_offsets=np.array([0, 10, 20]),
        window_lengths=np.array([20, 20, 10]),
        pair_query_index=np.array([0, 0, 0]),
        pair_window_index=np.array([0, 1, 2]),
        num_queries=1,
        num_frames=30,
        seconds_per_frame=0.5,
    )


def prediction(**changes):
    """A `post_process_video_grounding` entry: moments ranked, windows in rank order."""
    result = {
        "spans": torch.tensor([[1.0, 3.0], [5.0, 8.0], [10.0, 12.0]], dtype=torch.float64),
        "scores": torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64),
        "window_ranking": torch.tensor([1, 0, 2]),
        "window_scores": torch.tensor([0.8, 0.4, 0.1]),
    }
    return {**result, **changes}


def test_a_well_formed_result_is_drawn_in_seconds(metadata):
    window_axis, moment_axis = plot_timeline(prediction(), metadata, ground_truth=(4.0, 6.0)).axes
    assert moment_axis.get_xlim() == (0.0, 15.0) and moment_axis.get_xlabel() == "time (s)"
    # Window centres in seconds, window order: (0 + 10) · 0.5, (10 + 10) · 0.5, (20 + 5) · 0.5.
    assert window_axis.lines[0].get_xdata().tolist() == [5.0, 10.0, 12.5]
    assert window_axis.lines[0].get_ydata().tolist() == pytest.approx([0.4, 0.8, 0.1])


@pytest.mark.parametrize("key", ["scores", "spans", "window_scores"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_or_infinite_values_are_refused_by_name(metadata, key, value):
    """A NaN score once spoilt the colour scale of every bar (and a NaN span or window score drew nothing)."""
    changed = prediction()[key].clone()
    changed.view(-1)[1] = value
    with pytest.raises(ValueError, match=rf"`prediction\['{key}'\]` holds NaN or infinite values"):
        plot_timeline(prediction(**{key: changed}), metadata)


@pytest.mark.parametrize("num_scores", [2, 4])
def test_one_score_per_span_is_required(metadata, num_scores):
    """Too few scores once failed in `zip()`; too many, or any mismatch hidden by `top_k`, went unnoticed."""
    scores = torch.linspace(0.9, 0.1, num_scores, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"holds 3 spans but {num_scores} scores"):
        plot_timeline(prediction(scores=scores), metadata, top_k=2)


def test_spans_must_be_start_end_pairs(metadata):
    with pytest.raises(ValueError, match=r"`prediction\['spans'\]` must have shape \(K, 2\), got \(3,\)"):
        plot_timeline(prediction(spans=torch.tensor([1.0, 2.0, 3.0])), metadata)


@pytest.mark.parametrize("ranking", [[1, 1, 2], [1, 5, 2]])
def test_the_window_ranking_must_be_a_permutation(metadata, ranking):
    """A repeated window left another window's score uninitialised memory; one out of range failed in numpy."""
    with pytest.raises(ValueError, match=r"`prediction\['window_ranking'\]` must order the windows 0 to 2"):
        plot_timeline(prediction(window_ranking=torch.tensor(ranking)), metadata)


def test_ground_truth_must_be_finite(metadata):
    with pytest.raises(ValueError, match="`ground_truth` must be finite"):
        plot_timeline(prediction(), metadata, ground_truth=(math.nan, 2.0))


def test_several_queries_need_one_ground_truth_pair_each(metadata):
    """One `(start, end)` pair given for two queries once failed with "'float' object is not iterable"."""
    with pytest.raises(ValueError, match=r"`ground_truths\[0\]` must be finite \(start, end\) seconds"):
        plot_timelines([prediction(), prediction()], metadata, ground_truths=(1.0, 2.0))
    figure = plot_timelines([prediction(), prediction()], metadata, ground_truths=[(1.0, 2.0), None])
    assert len(figure.axes) == 4


def test_plot_timelines_refuses_a_single_result_or_a_single_query_string(metadata):
    """A single result once failed with "'str' object has no attribute 'get'" (its keys taken for results)."""
    with pytest.raises(ValueError, match="`predictions` must be a list of results, one per query"):
        plot_timelines(prediction(), metadata)
    with pytest.raises(ValueError, match="`queries` must hold one entry per prediction; got a single string"):
        plot_timelines([prediction(), prediction()], metadata, queries="ab")


def test_a_list_of_results_given_as_one_result_is_refused(metadata):
    """`plot_timeline(results, ...)` (the whole list, not `results[0]`) once failed with "'list' object has no
    attribute 'get'"."""
    with pytest.raises(ValueError, match=r"`prediction` must be one query's result .* got list"):
        plot_timeline([prediction()], metadata)
    with pytest.raises(ValueError, match=r"`predictions\[1\]` must be one query's result .* got list"):
        plot_timelines([prediction(), [prediction()]], metadata)
