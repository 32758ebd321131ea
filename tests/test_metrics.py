"""Tests of the long-video grounding metric (`metrics/long_video_grounding`).

Parity: every number of the original evaluators in the metric fixtures (fixtures README part C) is reproduced
exactly, through `evaluate.load` from the local folder. Then loading offline, hand-computed edge cases, and
input validation.
"""

import json
import socket
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch

from metrics.long_video_grounding.long_video_grounding import (
    GROUNDING_METRIC_SETTINGS,
    align_predictions_and_references,
    compute_grounding_metrics,
    load_ego4d_nlq_ground_truth,
    load_ego4d_predictions,
    load_mad_ground_truth,
    load_mad_predictions,
    positive_window_range,
    recall_at_k,
    temporal_iou,
    window_recall_at_k,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO_ROOT / "metrics" / "long_video_grounding"


def load_metric(config_name: str) -> evaluate.EvaluationModule:
    return evaluate.load(str(METRIC_DIR), config_name, keep_in_memory=True)


def percent_table(results: dict[str, float], keys: list[str]) -> list[str]:
    """The original display row: percentages with two decimals."""
    return [f"{100 * results[key]:.2f}" for key in keys]


# ---- Fixture readers ----


@pytest.fixture(scope="module")
def reported(original_fixtures_dir):
    return json.loads((original_fixtures_dir / "metrics.results.json").read_text())


@pytest.fixture(scope="module")
def mad_inputs(original_fixtures_dir):
    predictions = load_mad_predictions(original_fixtures_dir / "metrics.mad_predictions.jsonl")
    ground_truth = load_mad_ground_truth(original_fixtures_dir / "metrics.mad_ground_truth.jsonl")
    return align_predictions_and_references(predictions, ground_truth)


@pytest.fixture(scope="module")
def ego4d_inputs(original_fixtures_dir):
    predictions = load_ego4d_predictions(original_fixtures_dir / "metrics.ego4d_predictions.json")
    ground_truth = load_ego4d_nlq_ground_truth(original_fixtures_dir / "metrics.ego4d_ground_truth.json")
    return align_predictions_and_references(predictions, ground_truth)


@pytest.fixture(scope="module")
def window_rankings(original_fixtures_dir):
    return json.loads((original_fixtures_dir / "metrics.window_rankings.json").read_text())["window_recall"]


# ---- Parity with the original evaluators (fixtures part C) ----


def test_fixture_queries_are_read_in_the_reported_order(reported, mad_inputs, ego4d_inputs):
    reported_ids = [query["query_id"] for query in reported["queries"]]
    assert mad_inputs[0] == reported_ids
    assert ego4d_inputs[0] == reported_ids
    for query, rows, reference in zip(reported["queries"], mad_inputs[1], mad_inputs[2], strict=True):
        assert len(rows) == query["num_predictions"]
        assert reference == query["ground_truth"]
    # Both ground-truth layouts hold the same moments.
    assert ego4d_inputs[2] == mad_inputs[2]


def test_mad_recall_matrix_and_display_match_original(reported, mad_inputs):
    _, predictions, references = mad_inputs
    results = load_metric("mad").compute(predictions=predictions, references=references)
    expected = reported["mad"]
    # The fixture matrix is rows = K, columns = θ, float32 values written as doubles: compared exactly.
    recall = [[results[f"R@{k},IoU={t:g}"] for t in expected["thresholds"]] for k in expected["topK"]]
    assert recall == expected["recall_rows_topK_cols_thresholds"]
    keys = [f"R@{k},IoU={t:g}" for k in expected["topK"] for t in expected["thresholds"]]
    assert list(results) == keys
    assert percent_table(results, keys) == expected["display"][1]
    assert list(GROUNDING_METRIC_SETTINGS["mad"].iou_thresholds) == expected["thresholds"]
    assert list(GROUNDING_METRIC_SETTINGS["mad"].top_k) == expected["topK"]


def test_mad_float32_ious_match_original_per_query(reported, mad_inputs):
    _, predictions, references = mad_inputs
    for entry, rows, reference in zip(reported["mad_iou_per_query"], predictions, references, strict=True):
        spans = np.asarray(rows, dtype=np.float64)[:100, :2]
        ious = temporal_iou(spans, reference, dtype="float32")
        assert ious.dtype == np.float32
        assert ious.tolist() == entry["ious_first_100"], entry["query_id"]


def test_ego4d_recall_miou_and_display_match_original(reported, ego4d_inputs):
    _, predictions, references = ego4d_inputs
    results = load_metric("ego4d").compute(predictions=predictions, references=references)
    expected = reported["ego4d"]
    recall = [[results[f"R@{k},IoU={t:g}"] for k in expected["topK"]] for t in expected["thresholds"]]
    assert recall == expected["recall_rows_thresholds_cols_topK"]
    assert results["mIoU"] == expected["mIoU"]
    keys = [f"R@{k},IoU={t:g}" for k in expected["topK"] for t in expected["thresholds"]] + ["mIoU"]
    assert list(results) == keys
    assert percent_table(results, keys) == expected["display"][1]


def test_ego4d_top1_ious_match_original_per_query(reported, ego4d_inputs):
    _, predictions, references = ego4d_inputs
    top1 = [
        float(temporal_iou(np.asarray(rows)[:1, :2], reference)[0])
        for rows, reference in zip(predictions, references, strict=True)
    ]
    assert top1 == reported["ego4d"]["top1_iou_per_query"]


def test_ego4d_queries_without_prediction_are_not_counted(original_fixtures_dir, ego4d_inputs):
    path = original_fixtures_dir / "metrics.ego4d_ground_truth.json"
    unpredicted = {
        f"{annotation['annotation_uid']}_{index}"
        for video in json.loads(path.read_text())["videos"]
        for clip in video["clips"]
        for annotation in clip["annotations"]
        for index, query in enumerate(annotation["language_queries"])
        if query["query"] == "unpredicted"
    }
    ground_truth = load_ego4d_nlq_ground_truth(path)
    assert len(unpredicted) == 6 and len(ground_truth) == 59
    assert set(ego4d_inputs[0]) == set(ground_truth) - unpredicted


@pytest.mark.parametrize("config_name", ["mad", "ego4d"])
def test_window_recall_matches_original(config_name, reported, mad_inputs, window_rankings):
    setting = window_rankings[config_name]
    settings = GROUNDING_METRIC_SETTINGS[config_name]
    assert settings.window_length == setting["settings"]["max_v_l"]
    assert settings.seconds_per_frame == setting["settings"]["clip_length"]
    assert list(settings.window_top_k) == setting["K"]
    query_ids, predictions, references = mad_inputs
    assert list(setting["rankings"]) == query_ids
    rankings = [setting["rankings"][query_id] for query_id in query_ids]
    results = load_metric(config_name).compute(
        predictions=predictions, references=references, window_rankings=rankings
    )
    window_recall = [results[f"WindowR@{k}"] for k in setting["K"]]
    expected = reported["window_recall"][config_name]
    assert window_recall == expected["recall"]
    assert percent_table(results, [f"WindowR@{k}" for k in setting["K"]]) == expected["display"][1]


def test_rank_101_hit_is_never_counted_for_mad(reported, mad_inputs):
    query_ids, predictions, references = mad_inputs
    index = query_ids.index(
        next(q["query_id"] for q in reported["queries"] if q["category"] == "hit_only_at_rank_101")
    )
    rows, reference = [predictions[index]], [references[index]]
    mad = compute_grounding_metrics(
        rows, reference, settings=GROUNDING_METRIC_SETTINGS["mad"].with_overrides(top_k=[200])
    )
    ego4d = compute_grounding_metrics(
        rows, reference, settings=GROUNDING_METRIC_SETTINGS["ego4d"].with_overrides(top_k=[100, 101])
    )
    assert mad["R@200,IoU=0.5"] == 0.0
    assert ego4d["R@100,IoU=0.5"] == 0.0 and ego4d["R@101,IoU=0.5"] == 1.0


def test_mad_reads_only_the_first_100_predictions_of_a_query():
    """The same rule without the fixtures: 100 misses, then a hit at rank 101."""
    rows = [[[50.0 + rank, 51.0 + rank] for rank in range(100)] + [[0.0, 10.0]]]
    reference = [[0.0, 10.0]]
    mad = compute_grounding_metrics(
        rows, reference, settings=GROUNDING_METRIC_SETTINGS["mad"].with_overrides(top_k=[100, 101, 200])
    )
    ego4d = compute_grounding_metrics(
        rows, reference, settings=GROUNDING_METRIC_SETTINGS["ego4d"].with_overrides(top_k=[100, 101])
    )
    assert mad["R@100,IoU=0.5"] == mad["R@101,IoU=0.5"] == mad["R@200,IoU=0.5"] == 0.0
    assert ego4d["R@100,IoU=0.5"] == 0.0 and ego4d["R@101,IoU=0.5"] == 1.0
    rows[0][99] = [0.0, 10.0]  # the same hit at rank 100 counts for both
    mad = compute_grounding_metrics(rows, reference, settings="mad")
    assert mad["R@100,IoU=0.5"] == 1.0 and mad["R@50,IoU=0.5"] == 0.0


# ---- Loading ----


def test_loads_offline_from_the_folder_for_both_configs(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(REPO_ROOT)
    for config_name in ("mad", "ego4d"):
        for path in ("metrics/long_video_grounding", str(METRIC_DIR)):
            metric = evaluate.load(path, config_name, keep_in_memory=True)
            assert metric.config_name == config_name
            assert metric.compute(predictions=[[[0.0, 1.0]]], references=[[0.0, 1.0]])["R@1,IoU=0.5"] == 1.0


def test_unknown_config_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"config_name must be one of \['ego4d', 'mad'\]; got 'charades'"):
        load_metric("charades")
    with pytest.raises(ValueError, match="config_name"):
        evaluate.load(str(METRIC_DIR))


# ---- Hand-computed cases ----


@pytest.mark.parametrize("config_name", ["mad", "ego4d"])
def test_threshold_is_strict_at_exactly_half(config_name):
    # [0, 4] against [2, 4]: intersection 2, hull 4, IoU exactly 0.5 in both precisions.
    results = load_metric(config_name).compute(predictions=[[[0.0, 4.0, 0.9]]], references=[[2.0, 4.0]])
    assert results["R@1,IoU=0.5"] == 0.0
    assert results["R@1,IoU=0.3"] == 1.0


def test_mad_threshold_is_compared_in_float32():
    # IoU 0.3 + 2**-26 rounds to float32(0.3) (the value the threshold becomes), so MAD misses and Ego4D hits.
    reference = [0.0, 1.0]
    prediction = [[[0.0, 0.3 + 2**-26]]]
    assert temporal_iou(prediction[0], reference, dtype="float32")[0] == np.float32(0.3)
    mad = compute_grounding_metrics(prediction, [reference], settings="mad")
    ego4d = compute_grounding_metrics(prediction, [reference], settings="ego4d")
    assert mad["R@1,IoU=0.3"] == 0.0
    assert ego4d["R@1,IoU=0.3"] == 1.0


def test_recall_averages_hits_over_queries_and_ranks():
    predictions = [
        [[0.0, 1.0], [10.0, 20.0]],  # hit at rank 2 (IoU 1)
        [],  # no prediction: a miss everywhere
        [[5.0, 5.0], [4.0, 6.0, float("nan")]],  # zero-length prediction (IoU 0), then IoU 2/3 with a NaN score
        [[3.0, 3.0]],  # a point on a point reference: zero-length hull, IoU 0
    ]
    references = [[10.0, 20.0], [0.0, 1.0], [4.0, 7.0], [3.0, 3.0]]
    results = compute_grounding_metrics(predictions, references, settings="ego4d")
    assert results["R@1,IoU=0.5"] == 0.0
    assert results["R@5,IoU=0.5"] == 0.5
    assert results["mIoU"] == 0.0  # top-1 IoUs 0, 0 (empty), 0 (zero length), 0 (zero hull)
    ious = temporal_iou([[5.0, 5.0], [4.0, 6.0], [3.0, 3.0]], [[4.0, 7.0], [4.0, 7.0], [3.0, 3.0]])
    assert ious.tolist() == [0.0, 2.0 / 3.0, 0.0]


def test_iou_is_intersection_over_hull_and_touching_spans_do_not_overlap():
    ious = temporal_iou([[0.0, 2.0], [2.0, 6.0], [-1.0, 9.0], [1.0, 3.0]], [2.0, 4.0])
    assert ious.tolist() == [0.0, 0.5, 0.2, 1.0 / 3.0]


def test_positive_windows_span_floor_of_start_to_ceil_of_end_in_frames():
    # 0.2 s frames, stride 450 frames = 90 s: [100, 200] s = frames [500, 1000] -> windows 1 ... 3.
    first, last = positive_window_range([[100.0, 200.0], [0.0, 90.0]], seconds_per_frame=0.2, window_stride=450)
    assert first.tolist() == [1, 0] and last.tolist() == [3, 1]
    results = compute_grounding_metrics(
        [[[100.0, 200.0]], [[0.0, 90.0]]],
        [[100.0, 200.0], [0.0, 90.0]],
        settings=GROUNDING_METRIC_SETTINGS["mad"].with_overrides(window_top_k=[1, 2]),
        window_rankings=[[4, 3], [2]],
    )
    assert results["WindowR@1"] == 0.0 and results["WindowR@2"] == 0.5


def test_thresholds_and_k_lists_can_be_overridden_per_call():
    metric = load_metric("mad")
    results = metric.compute(
        predictions=[[[0.0, 1.0], [0.0, 2.0]]], references=[[0.0, 2.0]], iou_thresholds=[0.7], top_k=[1, 2]
    )
    assert results == {"R@1,IoU=0.7": 0.0, "R@2,IoU=0.7": 1.0}


# ---- Bad inputs ----


def test_length_mismatch_names_both_arguments():
    with pytest.raises(ValueError, match=r"predictions.*references"):
        load_metric("mad").compute(predictions=[[[0.0, 1.0]]], references=[[0.0, 1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match=r"predictions and references must hold one entry per query"):
        compute_grounding_metrics([[[0.0, 1.0]]], [[0.0, 1.0], [1.0, 2.0]])


@pytest.mark.parametrize(
    "predictions, references, match",
    [
        ([[[0.0]]], [[0.0, 1.0]], r"predictions\[0\]\[0\] must be a row \[start, end, \.\.\.\]"),
        ([[[0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0, 0.5], [2.0]]], [[0.0, 1.0]] * 2, r"predictions\[1\]\[2\]"),
        ([[[0.0, float("nan"), 0.5]]], [[0.0, 1.0]], r"predictions\[0\]\[0\] must have a finite start and end"),
        ([[[3.0, 1.0]]], [[0.0, 1.0]], r"predictions\[0\]\[0\] must satisfy start <= end"),
        ([[[0.0, 1.0]], [[0.0, 1.0]]], [[0.0, 1.0], [5.0, 2.0]], r"references\[1\] must satisfy start <= end"),
        ([[[0.0, 1.0]]], [[0.0, 1.0, 2.0]], r"references\[0\] must be a pair \[start, end\]"),
        # Text or booleans are not numbers, even where Arrow would convert them (e.g. a column read as strings).
        ([[["0", "1"]]], [[0.0, 1.0]], r"predictions\[0\]\[0\] must be a row \[start, end, \.\.\.\]"),
        ([[[0.0, 1.0], [0.0, "x"]]], [[0.0, 1.0]], r"predictions\[0\]\[1\] must be a row"),
        ([[[0.0, 1.0]]], [[False, True]], r"references\[0\] must be a pair \[start, end\] of numbers"),
        ([[[0.0, 1.0]]], [["0", "1"]], r"references\[0\] must be a pair \[start, end\] of numbers"),
    ],
)
def test_malformed_inputs_raise_value_error_naming_the_argument(predictions, references, match):
    with pytest.raises(ValueError, match=match):
        load_metric("ego4d").compute(predictions=predictions, references=references)
    with pytest.raises(ValueError, match=match):
        compute_grounding_metrics(predictions, references, settings="ego4d")


def test_a_single_query_added_is_checked_as_given():
    metric = load_metric("ego4d")
    with pytest.raises(ValueError, match=r"references\[0\] must be a pair \[start, end\] of numbers"):
        metric.add(prediction=[[0.0, 1.0]], reference=["0", 1.0])
    with pytest.raises(ValueError, match=r"prediction\[0\] must be a row"):
        metric.add(prediction=[[False, True]], reference=[0.0, 1.0])
    metric.add(prediction=[[0.0, 1.0]], reference=[0.0, 1.0])
    assert metric.compute()["R@1,IoU=0.5"] == 1.0


def test_bad_window_rankings_and_overrides_name_the_argument():
    inputs = {"predictions": [[[0.0, 1.0]]], "references": [[0.0, 1.0]]}
    with pytest.raises(ValueError, match=r"window_rankings must hold one ranking per query \(1\); got 2"):
        compute_grounding_metrics(**inputs, window_rankings=[[0], [1]])
    with pytest.raises(ValueError, match=r"window_rankings\[0\] must be a list of window indices"):
        compute_grounding_metrics(**inputs, window_rankings=[[0.5]])
    metric = load_metric("mad")
    for override, name in [({"top_k": [0]}, "top_k"), ({"iou_thresholds": [1.5]}, "iou_thresholds")]:
        with pytest.raises(ValueError, match=name):
            metric.compute(**inputs, **override)
    with pytest.raises(ValueError, match=r"settings must be one of"):
        compute_grounding_metrics(**inputs, settings="charades")
    # Each K and θ names one result: two that print alike would leave only one of their results.
    for override, name in [
        ({"top_k": [1, 5, 1]}, "top_k"),
        ({"window_top_k": [2, 2]}, "window_top_k"),
        ({"iou_thresholds": [0.3333333, 0.33333334]}, "iou_thresholds"),
    ]:
        with pytest.raises(ValueError, match=f"{name} must hold distinct values"):
            metric.compute(**inputs, **override)
    with pytest.raises(ValueError, match=r"window_rankings\[0\] must be a list of window indices; got \[1e\+30\]"):
        compute_grounding_metrics(**inputs, window_rankings=[[1e30]])  # beyond int64: the cast would wrap


def test_settings_that_are_neither_a_name_nor_settings_name_the_argument():
    inputs = {"predictions": [[[0.0, 1.0]]], "references": [[0.0, 1.0]]}
    for settings in (None, {"iou_dtype": "float32"}):
        with pytest.raises(
            ValueError, match=r"settings must be one of \['ego4d', 'mad'\] or a GroundingMetricSettings; got "
        ):
            compute_grounding_metrics(**inputs, settings=settings)


def test_a_missing_predictions_or_references_argument_raises_value_error():
    metric = load_metric("ego4d")
    with pytest.raises(ValueError, match=r"references must be a list of \[start, end\] pairs; got NoneType"):
        metric.compute(predictions=[[[0.0, 1.0]]])
    with pytest.raises(ValueError, match=r"predictions must be a list with one list of rows per query; got NoneType"):
        metric.add_batch(references=[[0.0, 1.0]])
    # One query added without its reference (or prediction) is refused at once, not stored for `compute` to fail on.
    with pytest.raises(ValueError, match=r"references\[0\] must be a pair \[start, end\] of numbers; got None"):
        metric.add(prediction=[[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"prediction must be a list of \[start, end, \.\.\.\] rows; got NoneType"):
        metric.add(reference=[0.0, 1.0])
    metric.add(prediction=[[0.0, 1.0]], reference=[0.0, 1.0])
    assert metric.compute(top_k=[1])["R@1,IoU=0.5"] == 1.0
    # Tensors are still accepted (checked after Arrow has made them lists).
    results = metric.compute(predictions=torch.tensor([[[0.0, 1.0]]]), references=torch.tensor([[0.0, 1.0]]), top_k=1)
    assert results["R@1,IoU=0.5"] == 1.0
    with pytest.raises(ValueError, match=r"predictions\[0\]\[0\] must satisfy start <= end"):
        metric.compute(predictions=torch.tensor([[[1.0, 0.0]]]), references=torch.tensor([[0.0, 1.0]]))


def test_recall_at_k_rejects_a_k_below_one_or_a_threshold_outside_the_unit_interval():
    ious = [np.array([0.0, 0.9])]  # a hit at rank 2 only
    assert recall_at_k(ious, [0.5], [1, 2]).tolist() == [[0.0, 1.0]]
    # K = 0 would read the last column (a hit "among the first 0"); a NaN θ would never hit.
    for top_k, thresholds, name in [([0], [0.5], "top_k"), ([-1], [0.5], "top_k"), ([1], [float("nan")], "iou")]:
        with pytest.raises(ValueError, match=rf"{name}\w* must be"):
            recall_at_k(ious, thresholds, top_k)
    # Repeats are harmless in the bare matrix (no result keys to collide).
    assert recall_at_k(ious, [0.5, 0.5], [2, 2]).tolist() == [[1.0, 1.0], [1.0, 1.0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seconds_per_frame": 0.0}, r"seconds_per_frame must be a positive finite number; got 0.0"),
        ({"seconds_per_frame": -0.2}, r"seconds_per_frame must be a positive finite number; got -0.2"),
        ({"seconds_per_frame": float("nan")}, r"seconds_per_frame must be a positive finite number; got nan"),
        ({"window_stride": -45}, r"window_stride must be a positive integer"),
        ({"window_stride": 0}, r"window_stride must be a positive integer"),
        ({"window_length": 0}, r"window_length must be a positive integer"),
    ],
)
def test_window_functions_reject_a_bad_geometry(kwargs, match):
    arguments = {"seconds_per_frame": 0.2, "window_stride": 45, "window_length": 90, **kwargs}
    with pytest.raises(ValueError, match=match):
        positive_window_range([[1.0, 2.0]], **arguments)
    with pytest.raises(ValueError, match=match):
        window_recall_at_k([[0]], [[1.0, 2.0]], top_k=[1], **arguments)


def test_window_recall_rejects_a_k_below_one():
    arguments = {"seconds_per_frame": 0.2, "window_stride": 45}
    assert window_recall_at_k([[0]], [[1.0, 2.0]], top_k=[1], **arguments).tolist() == [1.0]
    with pytest.raises(ValueError, match=r"top_k must be a positive integer"):
        window_recall_at_k([[0]], [[1.0, 2.0]], top_k=[0], **arguments)


def test_inputs_description_gives_the_window_span_for_any_window_length():
    description = load_metric("ego4d").inputs_description
    assert "[(w - 1) * stride, (w - 1) * stride + window_length)" in description
    # At the default stride of an odd length (91 frames, stride 45), window 0 covers frames [-45, 46) and so
    # overlaps a moment starting at frame 45, where floor(45 / 45) = 1 would leave it out.
    first, last = positive_window_range([[45.0, 50.0]], 1.0, 45, 91)
    assert (first.tolist(), last.tolist()) == ([0], [2])


def test_prediction_without_ground_truth_is_an_error():
    with pytest.raises(ValueError, match=r"references has no ground truth for 1 predicted queries, e.g. 'b_0'"):
        align_predictions_and_references({"a_0": [], "b_0": []}, {"a_0": [0.0, 1.0]})


# ---- Readers and incremental use ----


def test_mad_ground_truth_reader_accepts_rows_and_the_official_object():
    rows = [{"query_id": "q1", "timestamps": [1.0, 2.0]}, {"query_id": "q2", "timestamps": [3.0, 4.0]}]
    official = {"q1": {"sentence": "a", "movie": "m", "movie_duration": 9.0, "timestamps": [1.0, 2.0]}}
    assert load_mad_ground_truth(rows) == {"q1": [1.0, 2.0], "q2": [3.0, 4.0]}
    assert load_mad_ground_truth(official) == {"q1": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"source\[1\] must be a mapping with key 'timestamps'"):
        load_mad_ground_truth([rows[0], {"query_id": "q3"}])
    with pytest.raises(ValueError, match=r"source holds query 'q1' twice"):
        load_mad_predictions([{"query_id": "q1", "predicted_times": []}] * 2)


def test_add_batch_accumulates_queries_before_compute():
    metric = load_metric("ego4d")
    metric.add_batch(predictions=[[[0.0, 1.0]]], references=[[0.0, 1.0]])
    metric.add_batch(predictions=[[]], references=[[0.0, 1.0]])
    results = metric.compute(top_k=[1], window_rankings=[[0], [7]])
    assert results == {
        "R@1,IoU=0.3": 0.5,
        "R@1,IoU=0.5": 0.5,
        "mIoU": 0.5,
        "WindowR@1": 0.5,
        "WindowR@5": 0.5,
        "WindowR@10": 0.5,
        "WindowR@20": 0.5,
        "WindowR@30": 0.5,
        "WindowR@50": 0.5,
    }


# ---- Scalars for lists, and window settings and rankings checked ----


def test_a_single_k_or_threshold_means_a_one_element_list():
    metric = load_metric("mad")
    inputs = {"predictions": [[[0.0, 1.0], [0.0, 2.0]]], "references": [[0.0, 2.0]]}
    expected = metric.compute(**inputs, iou_thresholds=[0.7], top_k=[2], window_top_k=[1], window_rankings=[[0]])
    assert metric.compute(**inputs, iou_thresholds=0.7, top_k=2, window_top_k=1, window_rankings=[[0]]) == expected
    assert expected == {"R@2,IoU=0.7": 1.0, "WindowR@1": 1.0}
    settings = GROUNDING_METRIC_SETTINGS["mad"].with_overrides(top_k=np.int64(5), iou_thresholds=np.array(0.5))
    assert (settings.top_k, settings.iou_thresholds) == ((5,), (0.5,))
    for override, match in [
        ({"top_k": "5"}, r"top_k must be a positive integer or a non-empty list of them; got '5'"),
        ({"top_k": 0}, r"top_k must be a positive integer .*; got 0"),
        ({"iou_thresholds": 1.5}, r"iou_thresholds must be a number in \[0, 1\] or a non-empty list of them; got 1.5"),
    ]:
        with pytest.raises(ValueError, match=match):
            metric.compute(**inputs, **override)


@pytest.mark.parametrize(
    "window_rankings, match",
    [
        ([[0, 1], [2, -1]], r"window_rankings\[1\] must hold window indices >= 0; got -1 at position 1"),
        ([[0, 1, 0], [2, 3, 2]], r"window_rankings\[0\] must hold distinct window indices; window 0 appears"),
        ([[0, 1], [4, 3, 3]], r"window_rankings\[1\] must hold distinct window indices; window 3 appears"),
    ],
)
def test_window_rankings_with_negative_or_repeated_windows_name_the_row(window_rankings, match):
    inputs = {"predictions": [[[0.0, 1.0]], [[0.0, 1.0]]], "references": [[0.0, 1.0], [0.0, 1.0]]}
    with pytest.raises(ValueError, match=match):
        load_metric("ego4d").compute(**inputs, window_rankings=window_rankings)
    with pytest.raises(ValueError, match=match):
        compute_grounding_metrics(**inputs, window_rankings=window_rankings)


@pytest.mark.parametrize(("window_length", "window_stride"), [(90, 45), (90, 30), (90, 60), (100, 30), (31, 30)])
def test_positive_windows_follow_the_window_length_at_any_stride(window_length, window_stride):
    """The windows overlapping a moment, brute force over window spans, as the processor's training windows."""
    from processing_rgnet import compute_num_windows
    from processing_rgnet import positive_window_range as processor_positive_window_range

    rng = np.random.default_rng(window_length + window_stride)
    num_frames = 1000
    starts = rng.uniform(0, num_frames - 1, 200)
    frames = np.stack([starts, np.minimum(starts + rng.uniform(0.5, 150, 200), num_frames)], axis=1)
    first, last = positive_window_range(frames, 1.0, window_stride, window_length)
    windows = np.arange(compute_num_windows(num_frames, window_stride))
    window_starts = (windows - 1) * window_stride
    for moment, lo, hi in zip(frames, first, last, strict=True):
        overlapping = windows[(window_starts + window_length > moment[0]) & (window_starts < moment[1])]
        assert (lo, min(hi, windows[-1])) == (overlapping[0], overlapping[-1]), moment
    assert np.array_equal(
        (first, np.minimum(last, windows[-1])),
        processor_positive_window_range(frames, num_frames, window_length, window_stride),
    )
    settings = GROUNDING_METRIC_SETTINGS["ego4d"].with_overrides(
        window_length=window_length, window_stride=window_stride, seconds_per_frame=1.0, window_top_k=[1]
    )
    hits = compute_grounding_metrics(
        [[list(moment)] for moment in frames], frames.tolist(), settings=settings, window_rankings=first[:, None]
    )
    assert hits["WindowR@1"] == 1.0


@pytest.mark.parametrize("window_stride", [91, 90])
def test_window_stride_must_be_smaller_than_the_window(window_stride):
    inputs = {"predictions": [[[0.0, 1.0]]], "references": [[0.0, 1.0]], "window_rankings": [[0]]}
    match = rf"window_stride \({window_stride}\) must be smaller than window_length \(90\)"
    with pytest.raises(ValueError, match=match):
        load_metric("ego4d").compute(**inputs, window_stride=window_stride)
    with pytest.raises(ValueError, match=match):
        GROUNDING_METRIC_SETTINGS["mad"].with_overrides(window_length=90, window_stride=window_stride)
    assert load_metric("ego4d").compute(**inputs, window_stride=89)["WindowR@1"] == 1.0
