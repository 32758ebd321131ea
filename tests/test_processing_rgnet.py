"""Tests of `processing_rgnet`: window arithmetic (spec §6.1, §11 item 4), the processor, the collator and the
post-processing parity with the original implementation (fixtures part B, spec §7.5)."""

import dataclasses
import inspect
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoProcessor, CLIPTokenizer

import processing_rgnet
from configuration_rgnet import RGNetConfig
from modeling_rgnet import select_top_windows
from processing_rgnet import (
    RGNetBatchFeature,
    RGNetDataCollator,
    RGNetProcessor,
    RGNetWindowMetadata,
    batched_merge_identical_spans,
    batched_temporal_nms,
    compute_num_windows,
    draw_negative_windows,
    draw_saliency_frames,
    enumerate_windows,
    frame_query_similarities,
    merge_identical_spans,
    min_max_normalize,
    moment_to_frames,
    normalize_ego4d_query,
    normalize_mad_query,
    normalize_query,
    positive_window_range,
    positive_window_weights,
    post_process_queries,
    post_process_query,
    prepare_text_features,
    read_training_example,
    round_to_4_decimals,
    sample_training_windows,
    select_pairs,
    temporal_nms,
    window_bounds,
    window_target_spans,
)

FIXTURE_SETTINGS = {
    # Part B of the fixtures README: window 40 frames, stride 20, 8-d features.
    "mad": {"seconds_per_frame": 0.2, "top_k_windows": 30, "scale_matching_by_window_score": False},
    "ego4d": {"seconds_per_frame": 0.535, "top_k_windows": 20, "scale_matching_by_window_score": True},
}
CLEAN_QUERIES = ("annA_0", "annB_1", "annC_2", "annD_0")
HAZARD_QUERIES = ("annE_0", "annF_3")


# ---- helpers ----


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny character-level CLIP tokenizer built from local data (no download)."""
    symbols = list("abcdefghijklmnopqrstuvwxyz.?")
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({f"{symbol}</w>": len(symbols) + index for index, symbol in enumerate(symbols)})
    merges = [("t", "h"), ("th", "e</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


# The processor's settings, each named like the RGNetConfig field it comes from.
PROCESSOR_SETTINGS = (
    "max_window_frames",
    "window_stride",
    "max_text_tokens",
    "seconds_per_frame",
    "query_normalization",
    "top_k_windows",
    "nms_threshold",
    "max_candidates_before_nms",
    "max_predictions",
    "matching_top_k_frames",
    "scale_matching_by_window_score",
)


def make_processor(tokenizer=None, **overrides):
    settings = {
        "max_window_frames": 40,
        "window_stride": 20,
        "max_text_tokens": 6,
        "seconds_per_frame": 0.2,
        "top_k_windows": 30,
        "nms_threshold": 0.5,
        "max_candidates_before_nms": 200,
        "max_predictions": 100,
        "matching_top_k_frames": 3,
    }
    settings.update(overrides)
    return RGNetProcessor(tokenizer, **settings)


@pytest.fixture(scope="module")
def postprocess_fixture(original_fixtures_dir):
    outputs = json.loads((original_fixtures_dir / "postprocess.outputs.json").read_text())
    inputs = load_file(str(original_fixtures_dir / "postprocess.inputs.safetensors"))
    queries = {query["query_id"]: query for query in outputs["queries"]}
    return outputs, inputs, queries


def fixture_query_inputs(inputs, index):
    return {name: inputs[f"q{index}.{name}"] for name in ("logits", "pred_spans", "window_logits")}, inputs


def run_fixture_query_through_processor(postprocess_fixture, query_id, setting, **kwargs):
    """Processor call (windows + metadata) and post-processing of one fixture query with its stored outputs."""
    outputs, inputs, queries = postprocess_fixture
    index = queries[query_id]["index"]
    processor = make_processor(**FIXTURE_SETTINGS[setting])
    batch = processor(
        video_features=inputs[f"q{index}.video_features"], text_features=inputs[f"q{index}.text_token_features"]
    )
    model_outputs = {
        name: torch.from_numpy(inputs[f"q{index}.{name}"]) for name in ("logits", "pred_spans", "window_logits")
    }
    (result,) = processor.post_process_video_grounding(
        model_outputs,
        batch.window_metadata,
        video_features=inputs[f"q{index}.video_features"],
        sentence_embeddings=inputs[f"q{index}.sentence_embedding"],
        return_candidates=True,
        return_single_score_rankings=True,
        **kwargs,
    )
    return result, outputs["results"][setting][query_id]


def assert_rows_equal(actual, expected, name):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    # Seconds are exact (same float32 op order, same rounding); scores within 1e-6 (they are equal in practice).
    np.testing.assert_array_equal(actual[:, :2], expected[:, :2], err_msg=f"{name}: seconds")
    np.testing.assert_allclose(actual[:, 2:], expected[:, 2:], rtol=0, atol=1e-6, err_msg=f"{name}: scores")


def reference_rankings(candidates, nms_threshold=0.5, max_before=200, max_after=100):
    """Spec §7 steps 7-8 written plainly with Python lists, dicts and loops (an independent test reference)."""
    rows = [list(map(float, row[1:])) for row in candidates]

    def normalise(values):
        low, high = min(values), max(values)
        return values if low == high else [(value - low) / (high - low) for value in values]

    proposal = normalise([row[2] for row in rows])
    match = normalise([row[3] for row in rows])
    merged = {}
    for row, p, m in zip(rows, proposal, match, strict=True):
        merged[(row[0], row[1])] = [row[0], row[1], row[2], row[3], p + m]  # first position, last values
    merged = list(merged.values())

    def iou(a, b):
        intersection = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        hull = max(a[1], b[1]) - min(a[0], b[0])
        return 0.0 if hull == 0 else intersection / hull

    def nms(ranked):
        remaining, kept = ranked[:max_before], []
        while remaining and len(kept) < max_after:
            best = remaining.pop(0)
            kept.append(best)
            remaining = [row for row in remaining if iou(best, row) <= nms_threshold]
        return kept

    return {
        name: nms(sorted(merged, key=lambda row, column=column: row[column], reverse=True))
        for name, column in (("fusion", 4), ("proposal_only", 2), ("matching_only", 3))
    }


def reference_matching(inputs, index, num_frames, setting):
    """Matching score of every (window, slot), with plain loops and the clipped frame range of spec §7.4.

    Returns a dict keyed by `(window, rounded start_s, rounded end_s)`.
    """
    offsets, lengths = enumerate_windows(num_frames, 40, 20)
    video = inputs[f"q{index}.video_features"].astype(np.float64)
    query = inputs[f"q{index}.sentence_embedding"].astype(np.float64)
    query = query / np.linalg.norm(query)
    delta = np.float32(FIXTURE_SETTINGS[setting]["seconds_per_frame"])
    spans = inputs[f"q{index}.pred_spans"]
    window_scores = 1 / (1 + np.exp(-inputs[f"q{index}.window_logits"][:, 0].astype(np.float64)))
    table = {}
    for window in range(len(offsets)):
        n, w0 = np.float32(lengths[window]), np.float32(offsets[window])
        for center, width in spans[window]:
            start_fraction = center - width / np.float32(2)
            end_fraction = center + width / np.float32(2)
            first = max(math.floor(start_fraction * n), 0)
            last = min(math.ceil(end_fraction * n), int(lengths[window]))
            sims = []
            for frame in range(first, last):
                vector = video[offsets[window] + frame]
                sims.append(float(vector @ query / np.linalg.norm(vector)))
            score = sum(sorted(sims, reverse=True)[:3])
            if FIXTURE_SETTINGS[setting]["scale_matching_by_window_score"]:
                score *= window_scores[window]
            key = (
                window,
                round(float((start_fraction * n + w0) * delta), 4),
                round(float((end_fraction * n + w0) * delta), 4),
            )
            table[key] = score
    return table


class FakeGroundingModel:
    """A deterministic per-pair stand-in for the model: each pair's outputs depend only on that pair's inputs."""

    def __init__(self, video_dim, text_dim, num_slots=5, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.video_weights = torch.randn(video_dim, num_slots * 4 + 1, generator=generator)
        self.text_weights = torch.randn(text_dim, num_slots * 4 + 1, generator=generator)
        self.num_slots = num_slots

    def __call__(self, video_features, video_mask, text_features, text_mask):
        video = (video_features * video_mask[..., None]).sum(1) / video_mask.sum(1, keepdim=True)
        text = (text_features * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True)
        hidden = video @ self.video_weights + text @ self.text_weights  # (N, 4Q + 1)
        slots = hidden[:, :-1].reshape(-1, self.num_slots, 4)
        return {
            "logits": slots[..., :2],
            "pred_spans": torch.sigmoid(slots[..., 2:]),
            "window_logits": hidden[:, -1:],
        }


class FakeFeatureStore:
    """The data layer's feature-store interface over in-memory arrays; records every read."""

    def __init__(self, videos):
        self.videos = videos
        self.reads = []

    def num_frames(self, video_id):
        return self.videos[video_id].shape[0]

    def read_frames(self, video_id, start, end):
        self.reads.append((video_id, start, end))
        return self.videos[video_id][start:end]


# ---- query normalisation (spec §2) ----


def test_mad_query_normalization_strips_and_appends_period():
    assert normalize_mad_query("A man opens the door.") == "A man opens the door."
    assert normalize_mad_query("  Someone waves ") == "Someone waves."
    assert normalize_mad_query("Who is there?") == "Who is there."
    assert normalize_query("He runs..", "mad") == "He runs."


def test_ego4d_query_normalization_lowercases_and_appends_question_mark():
    assert normalize_ego4d_query("Where did I put the Keys?") == "where did i put the keys?"
    assert normalize_ego4d_query("What did I eat.") == "what did i eat?"
    assert normalize_query("WHO?", "ego4d") == "who?"


def test_query_normalization_strips_in_sequence_not_as_a_set():
    # `.`, then spaces, then `?` are stripped one after the other, so an inner `.` survives "a. ?".
    assert normalize_mad_query("a. ?") == "a. ."
    assert normalize_ego4d_query("A? .") == "a?"
    assert normalize_ego4d_query("What did I eat. ") == "what did i eat.?"  # the trailing space shields the "."


@pytest.mark.parametrize("text", ["", "   ", "?", ". ?", "..."])
def test_empty_query_raises(text):
    with pytest.raises(ValueError, match="empty"):
        normalize_mad_query(text)
    with pytest.raises(ValueError, match="empty"):
        normalize_ego4d_query(text)


def test_query_normalization_rejects_bad_arguments():
    with pytest.raises(ValueError, match="query_normalization"):
        normalize_query("a", "charades")
    with pytest.raises(ValueError, match="string"):
        normalize_mad_query(None)


# ---- window enumeration (spec §6.1, §7.1) ----


def test_enumerate_windows_matches_fixture_layout(postprocess_fixture):
    _, _, queries = postprocess_fixture
    for query in queries.values():
        offsets, lengths = enumerate_windows(query["num_frames"], 40, 20)
        np.testing.assert_array_equal(np.stack([offsets, lengths], axis=1), np.asarray(query["windows"]))


@pytest.mark.parametrize("stride", [7, 20, 25, 39])
def test_enumerate_windows_follows_the_formula(stride):
    for num_frames in (1, 19, 20, 21, 40, 57, 123, 1000):
        offsets, lengths = enumerate_windows(num_frames, 40, stride)
        assert (offsets.tolist(), lengths.tolist()) == hand_windows(num_frames, 40, stride)
        assert min(lengths) >= 1


def test_video_shorter_than_one_window_gives_truncated_windows():
    for num_frames, expected in ((9, [[0, 9], [0, 9]]), (1, [[0, 1], [0, 1]]), (25, [[0, 20], [0, 25], [20, 5]])):
        offsets, lengths = enumerate_windows(num_frames, 40, 20)
        np.testing.assert_array_equal(np.stack([offsets, lengths], axis=1), expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_frames": 100, "max_window_frames": 40, "window_stride": 40}, "window_stride"),
        ({"num_frames": 100, "max_window_frames": 40, "window_stride": 0}, "window_stride"),
        ({"num_frames": 0, "max_window_frames": 40, "window_stride": 20}, "num_frames"),
        ({"num_frames": 10.5, "max_window_frames": 40, "window_stride": 20}, "num_frames"),
        ({"num_frames": 100, "max_window_frames": 40.0, "window_stride": 20}, "max_window_frames"),
    ],
)
def test_invalid_window_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        enumerate_windows(**kwargs)


def test_window_helpers_check_their_stride_and_window_ids():
    """Both are exported: a zero or negative stride once gave 1 or negative window counts, and window ids outside the
    video offsets and negative lengths."""
    for stride in (0, -3, 2.0):
        with pytest.raises(ValueError, match="`window_stride` must be a positive integer"):
            compute_num_windows(10, stride)
    assert window_bounds(np.array([0, 5]), 100, 40, 20)[1].tolist() == [20, 20]  # W = 6: ids 0 … 5
    for ids in (np.array([5, -1]), np.array([6]), np.array([1.0])):
        with pytest.raises(ValueError, match="`window_ids`"):
            window_bounds(ids, 100, 40, 20)
    with pytest.raises(ValueError, match="window_stride"):
        window_bounds(np.array([0]), 100, 40, 40)


# ---- positive / negative windows, targets, saliency (spec §6.1, §11 item 4) ----


def test_positive_range_equals_spec_formula_for_half_window_stride():
    rng = np.random.default_rng(0)
    num_frames = 1000
    bounds = np.sort(rng.uniform(0, num_frames, size=(500, 2)), axis=1)
    bounds[:50] = np.round(bounds[:50] / 20) * 20  # moments on window boundaries
    first, last = positive_window_range(bounds, num_frames, 40, 20)
    np.testing.assert_array_equal(first, np.floor(bounds[:, 0] / 20))
    np.testing.assert_array_equal(last, np.ceil(bounds[:, 1] / 20))


@pytest.mark.parametrize("stride", [13, 25, 30])
def test_positive_range_is_the_set_of_overlapping_windows_for_other_strides(stride):
    rng = np.random.default_rng(stride)
    num_frames, length = 500, 40
    bounds = np.sort(np.round(rng.uniform(0, num_frames, size=(300, 2)), 1), axis=1)
    bounds[:20, 1] = bounds[:20, 0]  # zero-length moments
    first, last = positive_window_range(bounds, num_frames, length, stride)
    num_windows = math.ceil(num_frames / stride) + 1
    for (alpha, beta), lo, hi in zip(bounds, first, last, strict=True):
        expected = [i for i in range(num_windows) if (i - 1) * stride < beta and (i - 1) * stride + length > alpha]
        assert list(range(lo, hi + 1)) == expected, (alpha, beta)


def test_moment_in_window_zero():
    # [0, 1] s at 0.2 s/frame = frames [0, 5]: windows 0 ([0, 20)) and 1 ([0, 40)) overlap it.
    moment = moment_to_frames([0.0, 1.0], 0.2, 1000)
    first, last = positive_window_range(moment.frames, 1000, 40, 20)
    assert (int(first), int(last)) == (0, 1)
    spans, relative = window_target_spans(moment.frames[None], np.array([0, 1]), 1000, 40, 20)
    np.testing.assert_allclose(relative, [[0, 5], [0, 5]])
    np.testing.assert_allclose(spans, [[2.5 / 20, 5 / 20], [2.5 / 40, 5 / 40]], rtol=1e-6)


def test_moment_at_the_end_of_the_video():
    # T = 130 frames: W = 8 windows, the last one is [120, 130) with n = 10.
    moment = moment_to_frames([25.0, 26.0], 0.2, 130)
    first, last = positive_window_range(moment.frames, 130, 40, 20)
    assert (int(first), int(last)) == (6, 7)
    offsets, lengths = window_bounds(np.array([6, 7]), 130, 40, 20)
    np.testing.assert_array_equal(offsets, [100, 120])
    np.testing.assert_array_equal(lengths, [30, 10])
    spans, relative = window_target_spans(moment.frames[None], np.array([6, 7]), 130, 40, 20)
    np.testing.assert_allclose(relative, [[25, 30], [5, 10]])
    np.testing.assert_allclose(spans, [[27.5 / 30, 5 / 30], [0.75, 0.5]], rtol=1e-6)


def test_moment_longer_than_a_window():
    moment = moment_to_frames([2.0, 26.0], 0.2, 1000)  # frames [10, 130]
    first, last = positive_window_range(moment.frames, 1000, 40, 20)
    assert (int(first), int(last)) == (0, 7)
    spans, relative = window_target_spans(np.repeat(moment.frames[None], 8, 0), np.arange(8), 1000, 40, 20)
    np.testing.assert_allclose(spans[0], [0.75, 0.5])  # window 0 = [0, 20): frames 10-20
    np.testing.assert_allclose(spans[1], [0.625, 0.75])  # window 1 = [0, 40): frames 10-40
    np.testing.assert_allclose(spans[2:6], np.tile([0.5, 1.0], (4, 1)))  # windows [20, 60) … [80, 120): covered
    np.testing.assert_allclose(spans[6], [0.375, 0.75])  # window 6 = [100, 140): frames 100-130
    np.testing.assert_allclose(spans[7], [0.125, 0.25])  # window 7 = [120, 160): frames 120-130
    probabilities, counts = positive_window_weights(first[None], last[None])
    assert counts[0] == 8
    # Central windows are preferred, symmetrically.
    assert probabilities[0, 3] == probabilities[0, 4] > probabilities[0, 2] > probabilities[0, 0]
    np.testing.assert_allclose(probabilities[0], probabilities[0, ::-1])


def test_reversed_timestamps_are_swapped_and_reported():
    ordered = sample_training_windows(
        [3.0, 9.0], 500, np.random.default_rng(7), max_window_frames=40, window_stride=20, seconds_per_frame=0.2
    )
    reversed_ = sample_training_windows(
        [9.0, 3.0], 500, np.random.default_rng(7), max_window_frames=40, window_stride=20, seconds_per_frame=0.2
    )
    assert not ordered.swapped[0] and reversed_.swapped[0]
    for name in ("moment_frames", "positive_window", "span", "saliency_positive_frames", "negative_window"):
        np.testing.assert_array_equal(getattr(ordered, name), getattr(reversed_, name))


def test_out_of_range_timestamps_are_clipped_and_reported():
    moment = moment_to_frames([[-1.0, 4.0], [10.0, 1e6], [1.0, 2.0]], 0.2, 100)
    np.testing.assert_array_equal(moment.frames, [[0, 20], [50, 100], [5, 10]])
    np.testing.assert_array_equal(moment.clipped, [True, True, False])
    with pytest.raises(ValueError, match="timestamps"):
        moment_to_frames([1.0, float("nan")], 0.2, 100)
    with pytest.raises(ValueError, match="timestamps"):
        moment_to_frames([1.0, 2.0, 3.0], 0.2, 100)


def test_gaussian_positive_draw_prefers_central_windows_and_is_reproducible():
    num_queries = 20000
    timestamps = np.tile([2.0, 26.0], (num_queries, 1))  # positives 0..7
    kwargs = {"max_window_frames": 40, "window_stride": 20, "seconds_per_frame": 0.2}
    sample = sample_training_windows(timestamps, 1000, np.random.default_rng(3), **kwargs)
    frequencies = np.bincount(sample.positive_window, minlength=8) / num_queries
    weights = np.exp(-0.5 * (np.arange(8) - 3.5) ** 2)
    np.testing.assert_allclose(frequencies, weights / weights.sum(), atol=0.01)
    again = sample_training_windows(timestamps, 1000, np.random.default_rng(3), **kwargs)
    for name in ("positive_window", "saliency_positive_frames", "saliency_negative_frames", "negative_window"):
        np.testing.assert_array_equal(getattr(sample, name), getattr(again, name))


def test_negative_windows_never_overlap_the_moment():
    rng = np.random.default_rng(1)
    bounds = np.sort(rng.uniform(0, 300, size=(2000, 2)), axis=1)
    first, last = positive_window_range(bounds, 300, 40, 20)
    negative = draw_negative_windows(first, last, np.full(2000, 16), rng)
    exists = (first > 0) | (last < 15)
    np.testing.assert_array_equal(negative < 0, ~exists)  # -1 exactly where every window is positive
    negative, first, last, bounds = negative[exists], first[exists], last[exists], bounds[exists]
    assert ((negative < first) | (negative > last)).all() and (negative < 16).all()
    offsets, lengths = window_bounds(negative, 300, 40, 20)
    assert ((offsets + lengths <= bounds[:, 0]) | (offsets >= bounds[:, 1])).all()
    # Every window positive: no negative exists.
    assert draw_negative_windows(np.array([0]), np.array([2]), np.array([3]), rng)[0] == -1


def test_saliency_frames_fall_inside_and_outside_the_target():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 41, size=3000)
    starts = rng.uniform(0, lengths)
    ends = rng.uniform(starts, lengths)
    target = np.stack([starts, ends], axis=1)
    positive, negative = draw_saliency_frames(target, lengths, rng, num_pairs=4)
    low = np.minimum(np.floor(starts), lengths - 1)[:, None]
    high = np.maximum(np.ceil(ends)[:, None], low + 1)
    assert ((positive >= low) & (positive < high)).all()
    covered = (low == 0) & (high >= lengths[:, None])
    assert (negative[covered[:, 0]] == 0).all()
    outside = ~covered[:, 0]
    assert ((negative[outside] < low[outside]) | (negative[outside] >= high[outside])).all()
    assert ((negative >= 0) & (negative < lengths[:, None])).all()


def test_target_spans_are_the_moment_clipped_to_the_window():
    rng = np.random.default_rng(4)
    num_frames = 777
    bounds = np.sort(rng.uniform(0, num_frames, size=(400, 2)), axis=1)
    first, last = positive_window_range(bounds, num_frames, 40, 20)
    windows = rng.integers(first, last + 1)
    spans, _ = window_target_spans(bounds, windows, num_frames, 40, 20)
    offsets, lengths = window_bounds(windows, num_frames, 40, 20)
    assert (
        (spans[:, 1] >= 0) & (spans[:, 0] - spans[:, 1] / 2 >= -1e-6) & (spans[:, 0] + spans[:, 1] / 2 <= 1 + 1e-6)
    ).all()
    start = (spans[:, 0] - spans[:, 1] / 2) * lengths + offsets
    end = (spans[:, 0] + spans[:, 1] / 2) * lengths + offsets
    np.testing.assert_allclose(start, np.maximum(bounds[:, 0], offsets), atol=1e-3)
    np.testing.assert_allclose(end, np.minimum(bounds[:, 1], offsets + lengths), atol=1e-3)


def test_sample_training_windows_rejects_bad_arguments():
    kwargs = {"max_window_frames": 40, "window_stride": 20, "seconds_per_frame": 0.2}
    with pytest.raises(ValueError, match="rng"):
        sample_training_windows([1.0, 2.0], 100, 0, **kwargs)
    with pytest.raises(ValueError, match="timestamps"):
        sample_training_windows([[[1.0, 2.0]]], 100, np.random.default_rng(0), **kwargs)
    with pytest.raises(ValueError, match="`num_saliency_pairs` must be a positive integer"):
        sample_training_windows([1.0, 2.0], 100, np.random.default_rng(0), num_saliency_pairs=0, **kwargs)
    with pytest.raises(ValueError, match=r"`timestamps` must have shape \(B, 2\) with B >= 1"):
        sample_training_windows(np.zeros((0, 2)), 100, np.random.default_rng(0), **kwargs)
    with pytest.raises(ValueError, match=r"`num_frames` must be one count or one per query \(1\)"):
        sample_training_windows([1.0, 2.0], [100, 200], np.random.default_rng(0), **kwargs)
    for timestamps in (["1", "2"], [True, False], [[1.0, 2.0], [3.0]]):  # parsed, or ragged, before
        with pytest.raises(ValueError, match="`timestamps`"):
            sample_training_windows(timestamps, 100, np.random.default_rng(0), **kwargs)
        with pytest.raises(ValueError, match="`timestamps`"):
            moment_to_frames(timestamps, 0.2, 100)
    # numpy integers count as integers, as every other count setting
    sample = sample_training_windows(
        [1.0, 2.0], 100, np.random.default_rng(0), num_saliency_pairs=np.int64(2), **kwargs
    )
    assert sample.saliency_positive_frames.shape == (1, 2)


# ---- text features ----


def test_text_features_are_l2_normalised_and_truncated():
    rng = np.random.default_rng(5)
    raw = [rng.normal(size=(9, 16)).astype(np.float32), rng.normal(size=(2, 16)).astype(np.float32)]
    features, mask = prepare_text_features(raw, max_text_tokens=6)
    assert features.shape == (2, 6, 16)
    np.testing.assert_array_equal(mask.numpy(), [[1] * 6, [1, 1, 0, 0, 0, 0]])
    expected = raw[0][:6] / (np.linalg.norm(raw[0][:6], axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(features[0].numpy(), expected, rtol=1e-6)
    assert (features[1, 2:] == 0).all()
    with pytest.raises(ValueError, match="width"):
        prepare_text_features([raw[0], raw[1][:, :8]], 6)
    with pytest.raises(ValueError, match=r"text_features\[0\]"):
        prepare_text_features([np.zeros((0, 16))], 6)
    bad = raw[0].copy()
    bad[8, 3] = np.nan  # a token the truncation drops is still refused
    with pytest.raises(ValueError, match=r"`text_features\[1\]` contains NaN or infinite values"):
        prepare_text_features([raw[1], bad], 6)


# ---- processor ----


def two_queries_and_a_video(seed):
    """A 57-frame video (4 windows of the test processor) and two queries of 3 and 5 tokens."""
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(57, 8)).astype(np.float32)
    return video, [rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)]


def test_processor_pairs_are_query_major_and_hold_every_window():
    video, text = two_queries_and_a_video(6)
    processor = make_processor()
    batch = processor(video_features=video, text_features=text)
    assert set(batch.keys()) == {"video_features", "video_mask", "text_features", "text_mask"}
    assert set(batch.keys()) <= set(processor.model_input_names)
    metadata = batch.window_metadata
    np.testing.assert_array_equal(metadata.window_offsets, [0, 0, 20, 40])
    np.testing.assert_array_equal(metadata.window_lengths, [20, 40, 37, 17])
    assert (metadata.num_queries, metadata.num_windows, metadata.num_pairs, metadata.num_frames) == (2, 4, 8, 57)
    np.testing.assert_array_equal(metadata.pair_query_index, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(metadata.pair_window_index, [0, 1, 2, 3, 0, 1, 2, 3])
    assert batch["video_features"].shape == (8, 40, 8) and batch["text_features"].shape == (8, 5, 16)
    text_features, text_mask = prepare_text_features(text, 6)
    for pair in range(8):
        query, window = divmod(pair, 4)
        offset, length = metadata.window_offsets[window], metadata.window_lengths[window]
        np.testing.assert_array_equal(batch["video_features"][pair, :length].numpy(), video[offset : offset + length])
        assert (batch["video_features"][pair, length:] == 0).all()
        assert batch["video_mask"][pair].sum() == length and batch["video_mask"].dtype == torch.float32
        torch.testing.assert_close(batch["text_features"][pair], text_features[query])
        torch.testing.assert_close(batch["text_mask"][pair], text_mask[query])


def test_processor_shares_windows_on_request():
    video, text = two_queries_and_a_video(7)
    processor = make_processor()
    repeated = processor(video_features=video, text_features=text)
    shared = processor(video_features=video, text_features=text, share_windows=True)
    assert set(shared.keys()) == set(repeated.keys()) | {"video_pair_index"}
    assert set(shared.keys()) <= set(processor.model_input_names)
    assert shared["video_features"].shape == (4, 40, 8) and shared["video_pair_index"].dtype == torch.int64
    np.testing.assert_array_equal(shared["video_pair_index"].numpy(), shared.window_metadata.pair_window_index)
    for name in ("video_features", "video_mask"):
        assert torch.equal(shared[name][shared["video_pair_index"]], repeated[name])
    for name in ("text_features", "text_mask"):
        assert torch.equal(shared[name], repeated[name])
    with pytest.raises(ValueError, match="share_windows"):
        processor(video_features=video, text_features=text, share_window=True)


@pytest.mark.parametrize("rows", [slice(0, 8), slice(3, 6), slice(5, 6)])
def test_select_pairs_cuts_either_form_to_the_same_pairs(rows):
    video, text = two_queries_and_a_video(8)
    processor = make_processor()
    repeated = select_pairs(processor(video_features=video, text_features=text), rows)
    shared = select_pairs(processor(video_features=video, text_features=text, share_windows=True), rows)
    num_windows = len(torch.unique(shared["video_pair_index"]))
    assert shared["video_features"].shape[0] == num_windows  # only the windows these pairs read
    for name in ("video_features", "video_mask"):
        assert torch.equal(shared[name][shared["video_pair_index"]], repeated[name])
    for name in ("text_features", "text_mask"):
        assert torch.equal(shared[name], repeated[name])
    assert repeated["video_features"].shape[0] == rows.stop - rows.start
    # Each window and each query once: both indices renumbered to the rows these pairs read.
    both = select_pairs(
        processor(video_features=video, text_features=text, share_windows=True, share_queries=True), rows
    )
    assert both["text_features"].shape[0] == len(torch.unique(both["text_pair_index"]))
    for name in ("text_features", "text_mask"):
        assert torch.equal(both[name][both["text_pair_index"]], repeated[name])
    for name in ("video_features", "video_mask"):
        assert torch.equal(both[name][both["video_pair_index"]], repeated[name])


def test_shared_queries_hold_each_query_once(tokenizer):
    processor = make_processor(tokenizer, query_normalization="ego4d", max_text_tokens=4)
    video = np.ones((25, 8), np.float32)
    repeated = processor(text=["The cat?", "a dog."], video_features=video)
    shared = processor(text=["The cat?", "a dog."], video_features=video, share_queries=True)
    assert shared["input_ids"].shape[0] == 2 and shared["text_pair_index"].tolist() == [0, 0, 0, 1, 1, 1]
    for name in ("input_ids", "attention_mask"):
        assert torch.equal(shared[name][shared["text_pair_index"]], repeated[name])
    assert torch.equal(shared["video_features"], repeated["video_features"])
    assert set(shared.keys()) <= set(processor.model_input_names)


def test_processor_accepts_torch_video_and_one_query_array():
    video = torch.randn(30, 8)
    batch = make_processor()(video_features=video, text_features=torch.randn(4, 16))
    assert batch["video_features"].shape == (3, 30, 8) and batch.window_metadata.num_queries == 1
    batch = make_processor()(video_features=video.numpy(), text_features=np.ones((2, 4, 16), np.float32))
    assert batch["text_features"].shape == (6, 4, 16) and (batch["text_mask"] == 1).all()


def test_processor_tokenizes_normalised_text(tokenizer):
    processor = make_processor(tokenizer, query_normalization="ego4d", max_text_tokens=4)
    batch = processor(text=["The cat?", "abcdefghij."], video_features=np.ones((25, 8), np.float32))
    assert set(batch.keys()) == {"video_features", "video_mask", "input_ids", "attention_mask"}
    expected = tokenizer(["the cat?", "abcdefghij?"], padding="longest", truncation=True, max_length=6)
    assert batch["input_ids"].shape == (6, 6)
    np.testing.assert_array_equal(batch["input_ids"][::3].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"][::3].numpy(), expected["attention_mask"])
    np.testing.assert_array_equal(batch["input_ids"][0].numpy(), batch["input_ids"][2].numpy())


def test_processor_pads_and_truncates_on_the_right_whatever_the_tokenizer_is_set_to(tokenizer):
    processor = make_processor(tokenizer, query_normalization="ego4d", max_text_tokens=4)
    queries, video = ["The cat?", "abcdefghij."], np.ones((25, 8), np.float32)
    expected = processor(text=queries, video_features=video)
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        batch = processor(text=queries, video_features=video)
        assert (tokenizer.padding_side, tokenizer.truncation_side) == ("left", "left")  # left as the user set it
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = "right", "right"
    for name in ("input_ids", "attention_mask"):
        torch.testing.assert_close(batch[name], expected[name], rtol=0, atol=0)
    first = tokenizer("abcdefghij?", add_special_tokens=False).input_ids[:4]  # the query's first 4 of 11 tokens
    assert expected["input_ids"][3, 1:5].tolist() == first and expected["attention_mask"][3].all()


def test_processor_rejects_a_tokenizer_without_start_and_end_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[END]", "a", "red", "car."]
    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"`tokenizer` .* must wrap each query in a start and an end special token"):
        make_processor(plain)(text="a red car", video_features=np.ones((25, 8), np.float32))
    backend.post_processor = processors.TemplateProcessing(single="$A [END]", special_tokens=[("[END]", 2)])
    end_only = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"query 'a red car.' became \[3, 4, 5, 2\] with special-token mask"):
        make_processor(end_only)(text="a red car", video_features=np.ones((25, 8), np.float32))


# Every processor setting away from its constructor default (the stride not half the window), so that a setting
# lost on save, which reloads as its default, is caught.
NON_DEFAULT_SETTINGS = {
    "max_window_frames": 36,
    "window_stride": 15,
    "max_text_tokens": 7,
    "seconds_per_frame": 0.535,
    "query_normalization": "ego4d",
    "top_k_windows": 20,
    "nms_threshold": 0.3,
    "max_candidates_before_nms": 50,
    "max_predictions": 17,
    "matching_top_k_frames": 2,
    "scale_matching_by_window_score": True,
}


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_processor_save_and_load_round_trip(tokenizer, tmp_path, with_tokenizer):
    """Every setting is written to `processor_config.json` and loads back with its value and type, with a tokenizer
    (`ProcessorMixin`'s saving) and without one (the feature-only saving)."""
    assert tuple(NON_DEFAULT_SETTINGS) == PROCESSOR_SETTINGS
    parameters = inspect.signature(RGNetProcessor.__init__).parameters
    defaults = {name: parameters[name].default for name in PROCESSOR_SETTINGS}
    defaults["window_stride"] = NON_DEFAULT_SETTINGS["max_window_frames"] // 2  # None: half a window
    for name, value in NON_DEFAULT_SETTINGS.items():
        assert value != defaults[name], name
    processor = RGNetProcessor(tokenizer if with_tokenizer else None, **NON_DEFAULT_SETTINGS)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "RGNetProcessor"
    assert {name: config.get(name) for name in PROCESSOR_SETTINGS} == NON_DEFAULT_SETTINGS
    for loader in (RGNetProcessor, AutoProcessor):
        loaded = loader.from_pretrained(tmp_path)
        assert isinstance(loaded, RGNetProcessor)
        for name, value in NON_DEFAULT_SETTINGS.items():
            assert getattr(loaded, name) == value and type(getattr(loaded, name)) is type(value), name
        # The reloaded stride cuts the windows: a 50-frame video gives ceil(50/15) + 1 windows 15 frames apart.
        np.testing.assert_array_equal(
            loaded.cut_windows(np.ones((50, 4), np.float32)).window_offsets, [0, 0, 15, 30, 45]
        )
        if with_tokenizer:
            assert loaded.tokenizer("the cat").input_ids == tokenizer("the cat").input_ids
        else:
            assert loaded.tokenizer is None


def test_loading_with_a_tokenizer_rejects_a_misspelt_setting_and_takes_numpy_integers(tokenizer, tmp_path):
    make_processor(tokenizer).save_pretrained(tmp_path)
    for loader in (RGNetProcessor, AutoProcessor):
        with pytest.raises(TypeError, match="'top_k_windos' for RGNetProcessor; did you mean 'top_k_windows'"):
            loader.from_pretrained(tmp_path, top_k_windos=3)
        loaded = loader.from_pretrained(tmp_path, top_k_windows=np.int64(4), use_fast=False)  # a tokenizer option
        assert loaded.top_k_windows == 4 and type(loaded.top_k_windows) is int
        # Setting overrides are the processor's, not the tokenizer's options, and are checked as in the constructor.
        assert "top_k_windows" not in loaded.tokenizer.init_kwargs
        with pytest.raises(ValueError, match="seconds_per_frame"):
            loader.from_pretrained(tmp_path, seconds_per_frame=0)
    loaded.save_pretrained(tmp_path / "overridden")
    assert "top_k_windows" not in json.loads((tmp_path / "overridden" / "tokenizer_config.json").read_text())
    assert RGNetProcessor.from_pretrained(tmp_path / "overridden").top_k_windows == 4
    built = make_processor(
        tokenizer, max_window_frames=np.int64(40), window_stride=np.int32(20), max_predictions=np.int16(7)
    )
    assert all(type(getattr(built, name)) is int for name in ("max_window_frames", "window_stride", "max_predictions"))
    built.save_pretrained(tmp_path / "numpy")  # JSON holds Python ints
    assert RGNetProcessor.from_pretrained(tmp_path / "numpy").max_predictions == 7


def test_saved_processor_loads_with_trust_remote_code_in_a_fresh_process(tokenizer, tmp_path):
    save_directory = tmp_path / "saved"
    make_processor(tokenizer, max_window_frames=12, window_stride=6).save_pretrained(save_directory)
    config = json.loads((save_directory / "processor_config.json").read_text())
    assert config["auto_map"] == {"AutoProcessor": "processing_rgnet.RGNetProcessor"}
    assert (save_directory / "processing_rgnet.py").is_file() and (save_directory / "configuration_rgnet.py").is_file()
    script = textwrap.dedent(
        f"""
        import numpy as np
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(save_directory)!r}, trust_remote_code=True)
        batch = processor(text="the cat", video_features=np.ones((30, 4), np.float32))
        print(type(processor).__name__, processor.window_stride, tuple(batch["video_features"].shape))
        """
    )
    # A clean working directory and no repository on the path: the classes must come from the saved files.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-5:] == ["RGNetProcessor", "6", "(6,", "12,", "4)"]


@pytest.mark.parametrize("preset", ["mad", "ego4d-nlq-finetune"])
def test_processor_from_config_copies_the_windowing_and_inference_fields(preset):
    config = RGNetConfig.from_preset(preset)
    processor = RGNetProcessor.from_config(config)
    for name in PROCESSOR_SETTINGS:
        assert getattr(processor, name) == getattr(config, name), name


def test_feature_only_processor_rejects_text_and_round_trips_its_settings(tmp_path):
    processor = make_processor(top_k_windows=7)
    with pytest.raises(ValueError, match="tokenizer"):
        processor(text="a cat", video_features=np.ones((10, 8), np.float32))
    processor.save_pretrained(tmp_path)
    assert not (tmp_path / "tokenizer_config.json").exists()
    reloaded = RGNetProcessor.from_pretrained(tmp_path)
    assert reloaded.tokenizer is None
    assert RGNetProcessor.SETTINGS == PROCESSOR_SETTINGS
    for name in PROCESSOR_SETTINGS:
        assert getattr(reloaded, name) == getattr(processor, name), name
    assert AutoProcessor.from_pretrained(tmp_path).top_k_windows == 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"video_features": np.ones((10, 8)), "text_features": np.ones((2, 16)), "text": "a"}, "exactly one"),
        ({"video_features": np.ones((10, 8))}, "exactly one"),
        ({"text_features": np.ones((2, 16))}, "video_features"),
        ({"video_features": np.ones(10), "text_features": np.ones((2, 16))}, "video_features"),
        ({"video_features": np.ones((2, 10, 8)), "text_features": np.ones((2, 16))}, "video_features"),
        ({"video_features": np.ones((0, 8)), "text_features": np.ones((2, 16))}, "video_features"),
        ({"video_features": np.ones((10, 0)), "text_features": np.ones((2, 16))}, r"\(T >= 1, Dv >= 1\)"),
        ({"video_features": np.ones((10, 8)), "text_features": np.ones((2, 0))}, r"\(num_tokens >= 1, Dt >= 1\)"),
        ({"video_features": np.full((10, 8), np.nan), "text_features": np.ones((2, 16))}, "video_features"),
        ({"video_features": np.ones((10, 8)), "text_features": np.ones(16)}, "text_features"),
        ({"video_features": np.ones((10, 8)), "text_features": []}, "text_features"),
        ({"video_features": np.ones((10, 8)), "text_features": np.ones((2, 16)), "videos": 1}, "videos"),
    ],
)
def test_processor_rejects_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_processor()(**kwargs)


def test_processor_rejects_empty_text(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        make_processor(tokenizer)(text=["a cat", " ?"], video_features=np.ones((10, 8), np.float32))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"window_stride": 40}, "window_stride"),
        ({"query_normalization": "charades"}, "query_normalization"),
        ({"top_k_windows": 0}, "top_k_windows"),
        ({"nms_threshold": 1.5}, "nms_threshold"),
        ({"seconds_per_frame": 0}, "seconds_per_frame"),
    ],
)
def test_processor_rejects_bad_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_processor(**overrides)


def test_processor_checks_the_window_length_before_deriving_its_stride():
    with pytest.raises(ValueError, match="`max_window_frames` must be a positive integer, got '90'"):
        RGNetProcessor(None, max_window_frames="90")
    with pytest.raises(ValueError, match=r"`max_window_frames` must be at least 2 \(the default `window_stride`"):
        RGNetProcessor(None, max_window_frames=1)
    assert RGNetProcessor(None, max_window_frames=np.int64(3)).window_stride == 1


def test_batch_feature_keeps_window_metadata_through_to_and_pickle():
    batch = make_processor()(video_features=np.ones((30, 8), np.float32), text_features=np.ones((2, 16), np.float32))
    assert isinstance(batch, RGNetBatchFeature)
    restored = pickle.loads(pickle.dumps(batch))
    np.testing.assert_array_equal(restored.window_metadata.window_lengths, batch.window_metadata.window_lengths)
    torch.testing.assert_close(restored["video_features"], batch["video_features"])
    metadata = batch.window_metadata
    moved = batch.to(torch.float64)
    assert moved.window_metadata is metadata and moved["video_features"].dtype == torch.float64


# ---- training examples and collator (spec §6.1-6.2) ----


def make_training_samples(num_samples, seed=0, with_text=True):
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(num_samples):
        length = int(rng.integers(5, 41))
        sample = {
            "video_features": rng.normal(size=(length, 8)).astype(np.float32),
            "negative_video_features": rng.normal(size=(int(rng.integers(3, 41)), 8)).astype(np.float32),
            "span": np.array([0.5, 0.25], np.float32),
            "saliency_positive_frames": np.array([length // 2]),
            "saliency_negative_frames": np.array([0]),
        }
        if with_text:
            sample["text_features"] = rng.normal(size=(int(rng.integers(2, 9)), 16)).astype(np.float32)
        else:
            sample["query"] = ["the cat", "a dog.", "who?"][index % 3]
        samples.append(sample)
    return samples


def test_cross_pairs_batch_pairs_query_i_with_window_of_query_j():
    samples = make_training_samples(3)
    processor = make_processor()
    batch = RGNetDataCollator(processor, "cross_pairs")(samples)
    # Each window and each query once: pair p reads window video_pair_index[p] and query text_pair_index[p].
    assert batch["video_features"].shape[0] == 3 and batch["text_features"].shape[0] == 3
    assert batch["video_pair_index"].tolist() == [0, 1, 2] * 3
    assert batch["text_pair_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    text_features, text_mask = prepare_text_features([sample["text_features"] for sample in samples], 6)
    for pair in range(9):
        query, window = divmod(pair, 3)
        length = samples[window]["video_features"].shape[0]
        window_index = batch["video_pair_index"][pair]
        np.testing.assert_array_equal(
            batch["video_features"][window_index, :length].numpy(), samples[window]["video_features"]
        )
        assert batch["video_mask"][window_index].sum() == length
        torch.testing.assert_close(batch["text_features"][batch["text_pair_index"][pair]], text_features[query])
        torch.testing.assert_close(batch["text_mask"][batch["text_pair_index"][pair]], text_mask[query])
    labels = batch["labels"]
    assert labels["batch_mode"] == "cross_pairs"
    assert labels["spans"].shape == (3, 2) and labels["saliency_positive_frames"].dtype == torch.int64
    np.testing.assert_array_equal(
        labels["saliency_positive_frames"][:, 0].numpy(), [s["saliency_positive_frames"][0] for s in samples]
    )


def test_paired_negative_batch_stacks_positive_then_negative_windows(tokenizer):
    samples = make_training_samples(3, with_text=False)
    batch = RGNetDataCollator(make_processor(tokenizer), "paired_negative")(samples)
    assert batch["video_features"].shape[0] == 6 and batch["input_ids"].shape[0] == 3  # each query once
    assert batch["text_pair_index"].tolist() == [0, 1, 2, 0, 1, 2]  # positives, then negatives
    for row in range(6):
        key = "video_features" if row < 3 else "negative_video_features"
        window = samples[row % 3][key]
        np.testing.assert_array_equal(batch["video_features"][row, : len(window)].numpy(), window)
        assert batch["video_mask"][row].sum() == len(window)
    assert batch["labels"]["batch_mode"] == "paired_negative"


def test_collator_rejects_incomplete_samples():
    processor = make_processor()
    samples = make_training_samples(2)
    samples[1]["negative_video_features"] = None
    RGNetDataCollator(processor, "cross_pairs")(samples)  # not needed there
    with pytest.raises(ValueError, match="negative_video_features"):
        RGNetDataCollator(processor, "paired_negative")(samples)
    with pytest.raises(ValueError, match="span"):
        RGNetDataCollator(processor)([{**samples[0], "span": None}])
    with pytest.raises(ValueError, match="text_features"):
        RGNetDataCollator(processor)([samples[0], {**samples[1], "text_features": None}])
    with pytest.raises(ValueError, match="Saliency"):
        RGNetDataCollator(processor)([{**samples[0], "saliency_positive_frames": np.array([99])}])
    with pytest.raises(ValueError, match="pair_mode"):
        RGNetDataCollator(processor, "all_pairs")
    with pytest.raises(ValueError, match="samples"):
        RGNetDataCollator(processor)([])


@pytest.mark.parametrize(
    "index, key, value, match",
    [
        (1, "span", np.array([0.5, 0.2, 0.1]), r"Sample 1's `span` must be a finite \(center, width\) pair"),
        (0, "span", np.array([np.nan, 0.2]), r"Sample 0's `span` must be a finite"),
        (
            1,
            "saliency_positive_frames",
            np.array([1.9]),
            "Sample 1's `saliency_positive_frames` must be a 1-D array of integer",
        ),
        (1, "saliency_negative_frames", np.array([3, 4]), r"Sample 1's `saliency_negative_frames` has shape \(2,\)"),
        (1, "noise_seed", -1, r"Sample 1's `noise_seed` must be an integer in \[0, 2\*\*64\), got -1"),
        (0, "noise_seed", 1.7, r"Sample 0's `noise_seed` must be an integer"),
    ],
)
def test_collator_names_the_sample_and_key_of_a_bad_target(index, key, value, match):
    """Mismatched shapes once failed in `np.stack` naming neither, NaN spans and fractional frame indices or seeds
    were taken (truncated), and a negative seed overflowed."""
    samples = make_training_samples(2)
    for number, sample in enumerate(samples):
        sample["noise_seed"] = number
    samples[index][key] = value
    with pytest.raises(ValueError, match=match):
        RGNetDataCollator(make_processor())(samples)


def test_read_training_example_reads_only_the_sampled_windows():
    rng = np.random.default_rng(8)
    store = FakeFeatureStore({"videoA": rng.normal(size=(1000, 8)).astype(np.float32)})
    row = {
        "query_id": "q1",
        "query": "a man sits.",
        "video_id": "videoA",
        "duration": 200.0,
        "timestamps": [40.0, 52.0],
        "split": "train",
        "text_features": rng.normal(size=(4, 16)),
    }
    processor = make_processor()
    example = processor.prepare_training_example(row, store, np.random.default_rng(11))
    assert len(store.reads) == 2  # the positive, then the negative window; nothing else
    (_, start, end), (_, negative_start, negative_end) = store.reads
    assert (start, end - start) == (example["window_offset"], example["video_features"].shape[0])
    np.testing.assert_array_equal(example["video_features"], store.videos["videoA"][start:end])
    # 40-52 s = frames 200-260: positive windows 10 … 13.
    assert 10 <= example["positive_window"] <= 13 and not 10 <= example["negative_window"] <= 13
    np.testing.assert_array_equal(
        example["negative_video_features"], store.videos["videoA"][negative_start:negative_end]
    )
    assert example["text_features"].shape == (4, 16) and "query" not in example
    again = read_training_example(
        row,
        store,
        np.random.default_rng(11),
        max_window_frames=40,
        window_stride=20,
        seconds_per_frame=0.2,
        read_negative_window=False,
    )
    assert again["positive_window"] == example["positive_window"] and again["negative_video_features"] is None
    np.testing.assert_array_equal(again["span"], example["span"])
    batch = RGNetDataCollator(processor, "paired_negative")([example, example])
    assert batch["video_features"].shape[0] == 4


def test_read_training_example_rejects_rows_without_a_moment():
    store = FakeFeatureStore({"v": np.zeros((100, 8), np.float32)})
    with pytest.raises(ValueError, match="timestamps"):
        make_processor().prepare_training_example(
            {"query_id": "q", "video_id": "v", "timestamps": None}, store, np.random.default_rng(0)
        )


def test_read_training_example_takes_one_numeric_moment_and_a_whole_frame_count():
    """Two moments in one row once trained on the first alone, numeric strings were parsed, and a fractional frame
    count from the store was truncated."""
    store = FakeFeatureStore({"v": np.zeros((100, 8), np.float32)})
    row = {"query_id": "q", "query": "x", "video_id": "v"}
    processor = make_processor()
    with pytest.raises(ValueError, match=r"`query_row\['timestamps'\]` must be one \[start, end\] pair .* \(2, 2\)"):
        processor.prepare_training_example({**row, "timestamps": [[1, 2], [15, 16]]}, store, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"`query_row\['timestamps'\]` must hold numbers"):
        processor.prepare_training_example({**row, "timestamps": ["1", "2"]}, store, np.random.default_rng(0))
    example = processor.prepare_training_example({**row, "timestamps": (1, 2)}, store, np.random.default_rng(0))
    assert example["video_features"].shape[1] == 8  # integer seconds are numbers
    store.num_frames = lambda video_id: 99.7
    with pytest.raises(
        ValueError, match=r"`feature_store.num_frames\('v'\)` must return a positive integer, got 99.7"
    ):
        processor.prepare_training_example({**row, "timestamps": [1, 2]}, store, np.random.default_rng(0))


# ---- post-processing (spec §7) ----


def test_round_to_4_decimals_matches_python_round():
    rng = np.random.default_rng(9)
    values = np.concatenate(
        [
            rng.uniform(-5, 5, 20000),
            rng.uniform(0, 3000, 20000),
            np.arange(-2000, 2000) / 32 + 1 / 64,
        ]
    ).astype(np.float32)
    expected = np.array([round(float(value), 4) for value in values])
    np.testing.assert_array_equal(round_to_4_decimals(values), expected)


def test_nms_uses_intersection_over_hull_and_a_strict_threshold():
    # [0, 4] and [2, 4] have hull IoU exactly 0.5: both kept. [0, 4] and [0.5, 4] (IoU 0.875) are not.
    spans = np.array([[0.0, 4.0], [2.0, 4.0], [0.5, 4.0], [10.0, 11.0]])
    np.testing.assert_array_equal(temporal_nms(spans, 0.5, 100), [0, 1, 3])
    np.testing.assert_array_equal(temporal_nms(spans, 0.5, 2), [0, 1])


def _plain_top_k_sum(frames: torch.Tensor, k: int) -> torch.Tensor:
    """The span's `min(k, #frames)` largest values added best first in float32, one at a time (0 when empty)."""
    total = torch.zeros((), dtype=torch.float32)
    for value in torch.sort(frames, descending=True).values[:k]:
        total = total + value
    return total


def test_span_top_k_sum_reads_only_the_span_and_its_two_layouts_agree_bit_for_bit():
    """The matching score's top-k sum gathers each span's own frames when spans are short and the window's blocks when
    one is long: both give a plain per-span reference's bits, and so the same bits for the same spans."""
    generator = torch.Generator().manual_seed(3)
    num_frames, num_queries, num_windows, window = 400, 3, 4, 60
    cosine = torch.randn(num_frames, num_queries, generator=generator)
    offsets = torch.randint(0, num_frames - window, (num_queries, num_windows), generator=generator)
    lengths = torch.full((num_queries, num_windows), window)
    lengths[0, 0] = 10  # a truncated last window
    starts = torch.randint(0, 8, (num_queries, num_windows, 5), generator=generator)
    ends = starts + torch.randint(0, 12, (num_queries, num_windows, 5), generator=generator)  # empty spans too
    ends = torch.minimum(ends, lengths[..., None])
    no_spans = torch.zeros(num_queries, num_windows, 0, dtype=torch.long)
    assert processing_rgnet._span_top_k_sum(cosine, offsets, lengths, no_spans, no_spans, 3).shape == no_spans.shape
    for k in (1, 3, 20):
        short = processing_rgnet._span_top_k_sum(cosine, offsets, lengths, starts, ends, k)  # spans of < 30 frames
        long_ends = ends.clone()
        long_ends[2, 3, 4] = window  # one long span: the block layout for every span
        mixed = processing_rgnet._span_top_k_sum(cosine, offsets, lengths, starts, long_ends, k)
        untouched = torch.ones_like(ends, dtype=torch.bool)
        untouched[2, 3, 4] = False
        assert torch.equal(short[untouched], mixed[untouched])
        for query, window_index, slot in np.ndindex(*ends.shape):
            first = int(offsets[query, window_index] + starts[query, window_index, slot])
            last = int(offsets[query, window_index] + long_ends[query, window_index, slot])
            assert torch.equal(mixed[query, window_index, slot], _plain_top_k_sum(cosine[first:last, query], k))


@pytest.mark.parametrize("window, k", [(900, 3), (900, 1), (97, 5), (40, 3)])
def test_span_top_k_sum_block_layout_matches_a_plain_reference_on_every_kind_of_span(window, k, monkeypatch):
    """Long spans read each block wholly inside them through the block's k best and the rest frame by frame: spans
    on block boundaries, inside one block, across one boundary, whole windows, empty ones, windows shorter than the
    widest and a video shorter than the last window all give the plain reference's bits."""
    rng = np.random.default_rng(window + k)
    num_queries, num_windows, num_spans = 3, 5, 40
    num_frames = 3 * window + 7
    cosine = torch.from_numpy(rng.standard_normal((num_frames, num_queries)).astype(np.float32))
    cosine[::5] = cosine[1::5][: len(cosine[::5])]  # repeated values: ties inside and across blocks
    offsets = torch.from_numpy(rng.integers(0, num_frames - window // 2, (num_queries, num_windows)))
    lengths = torch.minimum(torch.full_like(offsets, window), num_frames - offsets)  # windows cut by the video's end
    lengths[1, 2] = max(1, window // 3)
    block = max(k, math.ceil(math.sqrt(k * window / 2)))
    near_boundaries = np.concatenate([np.arange(0, window + 1, block), np.arange(0, window + 1, block) + 1])
    bounds = rng.choice(
        np.concatenate([near_boundaries, rng.integers(0, window + 1, 20)]), (2, *offsets.shape, num_spans)
    )
    starts, ends = torch.from_numpy(bounds.min(axis=0)), torch.from_numpy(bounds.max(axis=0))
    starts[..., 0], ends[..., 0] = 0, window  # whole windows
    ends[..., 1] = starts[..., 1]  # empty spans
    ends = torch.minimum(ends, lengths[..., None])
    starts = torch.minimum(starts, ends)
    block_calls = []
    block_candidates = processing_rgnet._span_block_candidates
    monkeypatch.setattr(
        processing_rgnet,
        "_span_block_candidates",
        lambda *args: block_calls.append(args) or block_candidates(*args),
    )
    sums = processing_rgnet._span_top_k_sum(cosine, offsets, lengths, starts, ends, k)
    assert len(block_calls) == 1 and sums.dtype == torch.float32
    for query, window_index, slot in np.ndindex(*starts.shape):
        first = int(offsets[query, window_index] + starts[query, window_index, slot])
        last = int(offsets[query, window_index] + ends[query, window_index, slot])
        expected = _plain_top_k_sum(cosine[first:last, query], k)
        assert torch.equal(sums[query, window_index, slot], expected), (query, window_index, slot)


def test_merge_identical_spans_keeps_the_first_position_and_the_last_values():
    spans = np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 2.0], [3.0, 4.0], [0.0, 1.0], [-0.0, 5.0], [0.0, 5.0]])
    first, last = merge_identical_spans(spans)
    np.testing.assert_array_equal(first, [0, 1, 3, 5])
    np.testing.assert_array_equal(last, [2, 4, 3, 6])


def random_candidate_lists(rng, num_lists, length):
    """`(num_lists, length, 2)` spans on a coarse grid: repeated spans, tied IoUs, zero-length spans (identical ones
    have a zero hull), `-0.0` next to `0.0`, and some NaN rows."""
    start = rng.integers(0, 8, size=(num_lists, length)) / 2
    spans = np.stack([start, start + rng.integers(0, 5, size=(num_lists, length)) / 2], axis=-1)
    repeated = rng.random((num_lists, length)) < 0.3
    spans[:, 1:][repeated[:, 1:]] = spans[:, :-1][repeated[:, 1:]]
    spans[rng.random((num_lists, length)) < 0.05] = np.nan
    spans[..., 0] = np.where(spans[..., 0] == 0, rng.choice([-0.0, 0.0], size=(num_lists, length)), spans[..., 0])
    return spans


@pytest.mark.parametrize("block_pairs", [1, 40, 1 << 16])  # one rank per IoU block, a few, all at once
def test_batched_nms_keeps_what_temporal_nms_keeps_list_by_list(monkeypatch, block_pairs):
    monkeypatch.setattr(processing_rgnet, "_NMS_BLOCK_PAIRS", block_pairs)
    rng = np.random.default_rng(21)
    cut_short = 0
    for _ in range(100):
        num_lists, length = int(rng.integers(1, 9)), int(rng.integers(1, 30))
        spans = random_candidate_lists(rng, num_lists, length)
        if rng.random() < 0.2:  # float32 spans: IoU in float32, as `temporal_nms` computes it
            spans = spans.astype(np.float32)
        lengths = rng.integers(0, length + 1, size=num_lists)  # padded lists of different lengths
        valid = np.arange(length) < lengths[:, None]
        threshold = float(rng.choice([0.0, 0.3, 0.5, 1.0, -0.1]))
        max_keep = int(rng.integers(1, length + 2) if rng.random() < 0.5 else rng.integers(1, 4))
        valid_before = valid.copy()
        kept, num_kept = batched_temporal_nms(spans, valid, threshold, max_keep)
        np.testing.assert_array_equal(valid, valid_before)  # the input is not modified
        assert kept.dtype == np.int64 and kept.shape == (num_lists, num_kept.max(initial=0))
        for row in range(num_lists):
            expected = temporal_nms(spans[row, : lengths[row]], threshold, max_keep)
            np.testing.assert_array_equal(kept[row, : num_kept[row]], expected)
            assert not kept[row, num_kept[row] :].any()  # padded with 0
            cut_short += len(expected) == max_keep < len(temporal_nms(spans[row, : lengths[row]], threshold, 10**6))
    assert cut_short > 0  # some lists had more survivors than `max_keep`


def test_batched_nms_handles_masks_that_are_not_a_prefix():
    rng = np.random.default_rng(22)
    spans = random_candidate_lists(rng, 5, 25)
    valid = rng.random((5, 25)) < 0.6
    kept, num_kept = batched_temporal_nms(spans, valid, 0.4, 8)
    for row in range(5):
        positions = np.flatnonzero(valid[row])
        np.testing.assert_array_equal(
            kept[row, : num_kept[row]], positions[temporal_nms(spans[row][valid[row]], 0.4, 8)]
        )


def test_batched_nms_stops_once_every_list_is_full_or_exhausted(monkeypatch):
    """A list that has kept `max_keep` and one with no candidate left: the greedy pass stops there, not at the end."""
    spans = np.zeros((2, 200, 2))
    spans[0, :, 0] = np.arange(200) * 2.0  # disjoint: nothing suppressed
    spans[0, :, 1] = spans[0, :, 0] + 1
    spans[1] = spans[0]
    valid = np.ones((2, 200), dtype=bool)
    valid[1, 1:] = False  # one candidate
    monkeypatch.setattr(processing_rgnet, "_NMS_BLOCK_PAIRS", 1)  # one rank per IoU block
    blocks = []
    iou_above = processing_rgnet._iou_above
    monkeypatch.setattr(processing_rgnet, "_iou_above", lambda *args: blocks.append(args[2]) or iou_above(*args))
    kept, num_kept = batched_temporal_nms(spans, valid, 0.5, 5)
    assert num_kept.tolist() == [5, 1] and kept[0].tolist() == [0, 1, 2, 3, 4]
    assert len(blocks) <= 6


def test_batched_nms_rejects_bad_arguments():
    spans, valid = np.zeros((2, 3, 2)), np.ones((2, 3), dtype=bool)
    for max_keep in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="max_keep"):
            batched_temporal_nms(spans, valid, 0.5, max_keep)
        with pytest.raises(ValueError, match="max_keep"):  # 0 would otherwise keep every candidate
            temporal_nms(spans[0], 0.5, max_keep)
    with pytest.raises(ValueError, match="shape"):
        batched_temporal_nms(spans[:, :2], valid, 0.5, 3)


def test_empty_candidate_lists():
    first, last = merge_identical_spans(np.zeros((0, 2)))
    assert first.dtype == last.dtype == np.int64 and first.shape == last.shape == (0,)
    assert temporal_nms(np.zeros((0, 2)), 0.5, 3).shape == (0,)
    assert min_max_normalize(np.zeros(0)).shape == (0,) and min_max_normalize(np.zeros((2, 0))).shape == (2, 0)


def test_batched_merge_matches_merge_identical_spans_pool_by_pool():
    rng = np.random.default_rng(23)
    for _ in range(40):
        num_pools, pool_size = int(rng.integers(1, 7)), int(rng.integers(1, 40))
        spans = random_candidate_lists(rng, num_pools, pool_size)
        first, last, valid = batched_merge_identical_spans(spans)
        assert first.dtype == last.dtype == np.int64 and first.shape == last.shape == valid.shape
        for pool in range(num_pools):
            expected_first, expected_last = merge_identical_spans(spans[pool])
            assert valid[pool].sum() == len(expected_first) and valid[pool, : len(expected_first)].all()
            np.testing.assert_array_equal(first[pool, : len(expected_first)], expected_first)
            np.testing.assert_array_equal(last[pool, : len(expected_first)], expected_last)
            assert not first[pool, len(expected_first) :].any() and not last[pool, len(expected_first) :].any()
    first, last, valid = batched_merge_identical_spans(
        np.array([[[1.0, 2.0], [0.0, 1.0], [1.0, 2.0], [3.0, 4.0], [0.0, 1.0], [-0.0, 5.0], [0.0, 5.0]]])
    )
    np.testing.assert_array_equal(first, [[0, 1, 3, 5]])
    np.testing.assert_array_equal(last, [[2, 4, 3, 6]])


def test_reference_fusion_reproduces_the_original(postprocess_fixture):
    """Validates the test's plain-Python reference of spec §7 steps 7-8 on the original's own candidates."""
    outputs, _, _ = postprocess_fixture
    for setting in FIXTURE_SETTINGS:
        for query_id in CLEAN_QUERIES:
            expected = outputs["results"][setting][query_id]
            reference = reference_rankings(expected["candidates"])
            for name in ("fusion", "proposal_only", "matching_only"):
                assert reference[name] == expected[name], (setting, query_id, name)


@pytest.mark.parametrize("setting", sorted(FIXTURE_SETTINGS))
@pytest.mark.parametrize("query_id", ["annB_1", "annC_2", "annD_0"])
def test_postprocess_matches_the_original(postprocess_fixture, setting, query_id):
    result, expected = run_fixture_query_through_processor(postprocess_fixture, query_id, setting)
    assert result["window_ranking"].tolist() == expected["window_ranking"]
    np.testing.assert_allclose(
        result["window_scores"].numpy(), expected["window_scores_in_rank_order"], rtol=0, atol=1e-7
    )
    candidates = result["candidates"].numpy()
    np.testing.assert_array_equal(candidates[:, 0], np.asarray(expected["candidates"])[:, 0])
    assert_rows_equal(candidates[:, 1:], np.asarray(expected["candidates"])[:, 1:], "candidates")
    for name in ("fusion", "proposal_only", "matching_only"):
        actual = result["predictions"] if name == "fusion" else result[name]
        assert_rows_equal(actual.numpy(), expected[name], name)
    torch.testing.assert_close(result["spans"], result["predictions"][:, :2])
    torch.testing.assert_close(result["scores"], result["predictions"][:, 4])


@pytest.mark.parametrize("setting", sorted(FIXTURE_SETTINGS))
def test_postprocess_breaks_exact_window_ties_by_index(postprocess_fixture, setting):
    """annA_0: windows 11, 21, 22, 34 all have σ = 1.0. The original's unstable CPU sort ranked them 22, 21, 34, 11;
    spec §7.5 ranks exact ties by ascending index. Everything else must be the original's result re-ordered."""
    result, expected = run_fixture_query_through_processor(postprocess_fixture, "annA_0", setting)
    scores = np.asarray(expected["window_scores_in_rank_order"])
    original = np.asarray(expected["window_ranking"])
    stable = original[np.lexsort((original, -scores))]  # same scores, ties by index
    assert not np.array_equal(stable, original)
    assert result["window_ranking"].tolist() == stable.tolist()
    assert stable[:4].tolist() == [11, 21, 22, 34]
    # Candidates: the original's rows of each kept window, in the stable window order.
    original_candidates = np.asarray(expected["candidates"])
    kept = stable[: FIXTURE_SETTINGS[setting]["top_k_windows"]]
    reordered = np.concatenate([original_candidates[original_candidates[:, 0] == window] for window in kept])
    assert_rows_equal(result["candidates"].numpy()[:, 1:], reordered[:, 1:], "candidates")
    reference = reference_rankings(reordered)
    assert_rows_equal(result["predictions"].numpy(), reference["fusion"], "fusion")
    assert_rows_equal(result["proposal_only"].numpy(), reference["proposal_only"], "proposal_only")
    assert_rows_equal(result["matching_only"].numpy(), reference["matching_only"], "matching_only")


@pytest.mark.parametrize("setting", sorted(FIXTURE_SETTINGS))
def test_postprocess_replays_the_original_window_order_exactly(postprocess_fixture, setting):
    """Given the original's window order, annA_0 (top-k cut at tied scores, repeated spans) matches row for row."""
    outputs, inputs, queries = postprocess_fixture
    expected = outputs["results"][setting]["annA_0"]
    index = queries["annA_0"]["index"]
    offsets, lengths = enumerate_windows(queries["annA_0"]["num_frames"], 40, 20)
    result = post_process_query(
        *(torch.from_numpy(inputs[f"q{index}.{name}"]) for name in ("logits", "pred_spans", "window_logits")),
        offsets,
        lengths,
        torch.from_numpy(inputs[f"q{index}.video_features"]),
        torch.from_numpy(inputs[f"q{index}.sentence_embedding"]),
        nms_threshold=0.5,
        max_candidates_before_nms=200,
        max_predictions=100,
        matching_top_k_frames=3,
        window_ranking=torch.tensor(expected["window_ranking"]),
        return_candidates=True,
        return_single_score_rankings=True,
        **FIXTURE_SETTINGS[setting],
    )
    assert_rows_equal(result["candidates"].numpy()[:, 1:], np.asarray(expected["candidates"])[:, 1:], "candidates")
    assert_rows_equal(result["predictions"].numpy(), expected["fusion"], "fusion")
    assert_rows_equal(result["proposal_only"].numpy(), expected["proposal_only"], "proposal_only")
    assert_rows_equal(result["matching_only"].numpy(), expected["matching_only"], "matching_only")


def test_frame_similarities_of_all_queries_give_the_same_rankings(postprocess_fixture):
    """The processor computes the frame cosines of all a video's queries in one product (frames normalised once);
    per query that is bit for bit the same as computing them alone, whatever the other queries are."""
    _, inputs, queries = postprocess_fixture
    index = queries["annA_0"]["index"]
    offsets, lengths = enumerate_windows(queries["annA_0"]["num_frames"], 40, 20)
    video = torch.from_numpy(inputs[f"q{index}.video_features"])
    common = dict(
        nms_threshold=0.5,
        max_candidates_before_nms=200,
        max_predictions=100,
        matching_top_k_frames=3,
        return_candidates=True,
        **FIXTURE_SETTINGS[sorted(FIXTURE_SETTINGS)[0]],
    )
    arrays = [torch.from_numpy(inputs[f"q{index}.{name}"]) for name in ("logits", "pred_spans", "window_logits")]
    sentence = torch.from_numpy(inputs[f"q{index}.sentence_embedding"])
    raw = post_process_query(*arrays, offsets, lengths, video, sentence, **common)
    others = torch.randn(37, sentence.shape[0], generator=torch.Generator().manual_seed(0))
    for position in (0, 20, 37):
        embeddings = torch.cat([others[:position], sentence[None], others[position:]])
        similarities = frame_query_similarities(video, embeddings)
        shared = post_process_query(
            *arrays, offsets, lengths, None, None, frame_similarities=similarities[:, position], **common
        )
        for name in ("predictions", "candidates"):
            assert torch.equal(raw[name], shared[name])


def test_prediction_sources_name_the_window_and_slot_of_each_moment():
    """Each prediction's `[window, slot]` recomputes its seconds (the window offset included) and its proposal score
    (foreground probability, class 0, times `σ(ρ)`) from the raw outputs; synthetic outputs, no fixture needed."""
    rng = np.random.default_rng(31)
    offsets, lengths = enumerate_windows(97, 20, 8)  # 14 windows, offsets up to 96, a 1-frame last window
    logits = torch.from_numpy(rng.normal(size=(len(offsets), 5, 2)).astype(np.float32))
    pred_spans = torch.from_numpy(rng.uniform(0.05, 0.95, size=(len(offsets), 5, 2)).astype(np.float32))
    window_logits = torch.from_numpy(rng.normal(size=(len(offsets), 1)).astype(np.float32))
    delta = np.float32(0.3)
    result = post_process_query(
        logits,
        pred_spans,
        window_logits,
        offsets,
        lengths,
        torch.from_numpy(rng.normal(size=(97, 8)).astype(np.float32)),
        torch.from_numpy(rng.normal(size=8).astype(np.float32)),
        seconds_per_frame=0.3,
        top_k_windows=10,
        nms_threshold=0.5,
        max_candidates_before_nms=200,
        max_predictions=100,
        matching_top_k_frames=3,
        scale_matching_by_window_score=False,
    )
    sources = result["prediction_sources"]
    assert sources.dtype == torch.int64 and sources.shape == (len(result["predictions"]), 2)
    assert len(sources) > 5 and (offsets[sources[:, 0].numpy()] > 0).sum() > 5  # offsets matter for most rows
    window_scores = torch.sigmoid(window_logits.reshape(-1).float())
    for (start, end, proposal, _, _), (window, slot) in zip(
        result["predictions"].numpy(), sources.tolist(), strict=True
    ):
        center, width = pred_spans[window, slot].numpy()
        n, w0 = np.float32(lengths[window]), np.float32(offsets[window])
        assert start == round(float(((center - width / 2) * n + w0) * delta), 4)
        assert end == round(float(((center + width / 2) * n + w0) * delta), 4)
        expected = logits[window, slot].float().softmax(-1)[0] * window_scores[window]
        assert proposal == round(float(expected), 4)


# ---- Post-processing recomputed by hand on synthetic outputs (spec §7, §7.4, §7.5; no fixture needed) ----


def sigmoid(value):
    return 1 / (1 + math.exp(-value))


def hand_windows(num_frames, max_window_frames, window_stride):
    """Spec §6.1 by hand: `ceil(T/s) + 1` windows, window `i` covering `[max((i−1)s, 0), min((i−1)s + Lmax, T))`."""
    starts = [(i - 1) * window_stride for i in range(-(-num_frames // window_stride) + 1)]
    offsets = [max(start, 0) for start in starts]
    ends = [min(start + max_window_frames, num_frames) for start in starts]
    return offsets, [end - offset for offset, end in zip(offsets, ends, strict=True)]


def hand_candidates(logits, pred_spans, window_logits, video, sentence, settings):
    """Spec §7 steps 3-6 and §7.4 with plain loops for one query: the pooled candidates in pool order (windows by
    `σ(ρ)`, slots by proposal score) as `[window, start_s, end_s]` rounded, and the unrounded proposal and matching
    scores (float64; the code computes them in float32, so its rounded values may differ by one unit of rounding).

    Seconds follow §7.5 exactly: float32 `((c ∓ w/2)·n + w0)·δ`, then Python's `round(x, 4)`.
    """
    offsets, lengths = hand_windows(len(video), settings["max_window_frames"], settings["window_stride"])
    scores = [sigmoid(float(logit)) for logit in window_logits]
    ranking = sorted(range(len(scores)), key=lambda window: -scores[window])  # stable: ties by index
    delta = np.float32(settings["seconds_per_frame"])
    query = sentence.astype(np.float64) / np.linalg.norm(sentence.astype(np.float64))
    positions, rows = [], []
    for window in ranking[: settings["top_k_windows"]]:
        n, w0 = lengths[window], offsets[window]
        window_rows = []
        for slot, ((foreground, background), (center, width)) in enumerate(
            zip(logits[window], pred_spans[window], strict=True)
        ):
            foreground, background = float(foreground), float(background)
            p_foreground = math.exp(foreground) / (math.exp(foreground) + math.exp(background))  # softmax[0]
            start_frame = (center - width / np.float32(2)) * np.float32(n)  # float32, window-relative
            end_frame = (center + width / np.float32(2)) * np.float32(n)
            # §7.4: frames [max(⌊start⌋, 0), ⌈end⌉), clipped to the window's n valid frames; top-k cosines summed.
            cosines = []
            for frame in range(max(math.floor(start_frame), 0), min(math.ceil(end_frame), n)):
                vector = video[w0 + frame].astype(np.float64)
                cosines.append(float(vector @ query / np.linalg.norm(vector)))
            match = sum(sorted(cosines, reverse=True)[: settings["matching_top_k_frames"]])
            if settings["scale_matching_by_window_score"]:
                match *= scores[window]
            start_s = round(float((start_frame + np.float32(w0)) * delta), 4)
            end_s = round(float((end_frame + np.float32(w0)) * delta), 4)
            window_rows.append(([window, slot], [window, start_s, end_s, p_foreground * scores[window], match]))
        window_rows.sort(key=lambda row: -row[1][3])  # slots by proposal score, stable
        positions += [source for source, _ in window_rows]
        rows += [row for _, row in window_rows]
    return ranking, np.asarray(positions), np.asarray(rows)


def assert_candidates_match_hand_values(candidates, expected, name):
    """Windows and seconds exactly; scores within one rounding half-unit (4 decimals) of the float64 hand values."""
    candidates = np.asarray(candidates, dtype=np.float64)
    assert candidates.shape == expected.shape, f"{name}: shape {candidates.shape} != {expected.shape}"
    np.testing.assert_array_equal(candidates[:, :3], expected[:, :3], err_msg=f"{name}: windows and seconds")
    np.testing.assert_allclose(candidates[:, 3], expected[:, 3], rtol=0, atol=5e-5 + 1e-6, err_msg=f"{name}: proposal")
    np.testing.assert_allclose(candidates[:, 4], expected[:, 4], rtol=0, atol=5e-5 + 1e-6, err_msg=f"{name}: matching")


@pytest.mark.parametrize("scale_matching_by_window_score", [False, True])
def test_postprocess_equals_a_hand_computation_on_synthetic_outputs(scale_matching_by_window_score):
    """`post_process_video_grounding` of two queries against spec §7 recomputed with loops: window ranking, seconds
    (window offset included), proposal score `p_fg·σ(ρ)`, matching score over the clipped frame range, pool order,
    then fusion, merge and NMS (`reference_rankings`). Spans cross both window edges, the stride is not half a
    window, and every count setting cuts something."""
    settings = {
        "max_window_frames": 10,
        "window_stride": 4,
        "seconds_per_frame": 0.3,
        "top_k_windows": 5,
        "nms_threshold": 0.4,
        "max_candidates_before_nms": 12,
        "max_predictions": 6,
        "matching_top_k_frames": 2,
        "scale_matching_by_window_score": scale_matching_by_window_score,
    }
    rng = np.random.default_rng(32)
    num_frames, num_queries, num_slots = 31, 2, 4
    video = rng.normal(size=(num_frames, 8)).astype(np.float32)
    sentences = rng.normal(size=(num_queries, 8)).astype(np.float32)
    processor = make_processor(**settings)
    batch = processor(video_features=video, text_features=rng.normal(size=(num_queries, 3, 16)).astype(np.float32))
    offsets, lengths = hand_windows(num_frames, 10, 4)
    assert (offsets, lengths) == ([0, 0, 4, 8, 12, 16, 20, 24, 28], [6, 10, 10, 10, 10, 10, 10, 7, 3])
    np.testing.assert_array_equal(batch.window_metadata.window_offsets, offsets)
    np.testing.assert_array_equal(batch.window_metadata.window_lengths, lengths)
    num_pairs = num_queries * len(offsets)  # query-major: pair q·W + w
    centers = rng.uniform(0.0, 1.0, size=(num_pairs, num_slots))
    widths = rng.uniform(0.05, 0.8, size=(num_pairs, num_slots))
    outputs = types.SimpleNamespace(
        logits=torch.from_numpy(rng.normal(scale=2.0, size=(num_pairs, num_slots, 2)).astype(np.float32)),
        pred_spans=torch.from_numpy(np.stack([centers, widths], axis=-1).astype(np.float32)),
        window_logits=torch.from_numpy(rng.normal(scale=2.0, size=(num_pairs, 1)).astype(np.float32)),
    )
    results = processor.post_process_video_grounding(
        outputs,
        batch.window_metadata,
        video_features=video,
        sentence_embeddings=sentences,
        return_candidates=True,
        return_single_score_rankings=True,
    )
    assert len(results) == num_queries
    clipped = 0
    for query, result in enumerate(results):
        rows = slice(query * len(offsets), (query + 1) * len(offsets))
        ranking, sources, expected = hand_candidates(
            outputs.logits[rows].numpy(),
            outputs.pred_spans[rows].numpy(),
            outputs.window_logits[rows, 0].numpy(),
            video,
            sentences[query],
            settings,
        )
        assert result["window_ranking"].tolist() == ranking
        candidates = result["candidates"].numpy()
        assert_candidates_match_hand_values(candidates, expected, f"query {query} candidates")
        rankings = reference_rankings(candidates, 0.4, 12, 6)
        assert_rows_equal(result["predictions"].numpy(), rankings["fusion"], f"query {query} fusion")
        assert_rows_equal(result["proposal_only"].numpy(), rankings["proposal_only"], f"query {query} proposal")
        assert_rows_equal(result["matching_only"].numpy(), rankings["matching_only"], f"query {query} matching")
        assert len(result["predictions"]) == 6  # max_predictions cuts (9 moments survive NMS otherwise)
        # The prediction's source is the candidate of the same (start, end) that the merge keeps (the last one).
        for row, source in zip(result["predictions"].numpy(), result["prediction_sources"].tolist(), strict=True):
            same_span = np.flatnonzero((candidates[:, 1] == row[0]) & (candidates[:, 2] == row[1]))
            assert source == sources[same_span[-1]].tolist()
        spans = outputs.pred_spans[rows].numpy()
        kept = ranking[: settings["top_k_windows"]]
        clipped += int(((spans[kept, :, 0] - spans[kept, :, 1] / 2) < 0).sum())
        clipped += int(((spans[kept, :, 0] + spans[kept, :, 1] / 2) > 1).sum())
    assert clipped >= 4  # the frame ranges were clipped at both window edges


def test_postprocess_of_a_worked_example():
    """A one-query example small enough to state every number: exact frame cosines (`frame_similarities`), two kept
    windows with two slots each. Seconds, proposal and matching scores, fusion and the three rankings are written out
    from spec §7 and §7.4."""
    processor = make_processor(
        max_window_frames=8,
        window_stride=4,
        seconds_per_frame=0.5,
        top_k_windows=2,
        matching_top_k_frames=2,
        nms_threshold=0.5,
    )
    # T = 12: windows (w0, n) = (0, 4), (0, 8), (4, 8), (8, 4).
    batch = processor(video_features=np.ones((12, 4), np.float32), text_features=np.ones((2, 16), np.float32))
    np.testing.assert_array_equal(batch.window_metadata.window_offsets, [0, 0, 4, 8])
    np.testing.assert_array_equal(batch.window_metadata.window_lengths, [4, 8, 8, 4])
    # Cosine of each frame t = 0 … 11 with the query; dyadic or short decimals, so the sums are exact enough.
    similarities = np.array([0.1, 0.2, 0.3, 0.4, 0.0, 0.9, 0.25, 0.5, 0.125, 0.75, -0.5, 0.0], np.float32)
    window_logits = [-2.0, 1.0, 2.0, 0.0]  # ranking 2, 1, 3, 0: windows 2 and 1 are kept
    logits = [
        [[0.0, 0.0], [0.0, 0.0]],
        [[-1.0, 1.0], [3.0, 0.0]],  # p_fg = σ(−2), σ(3)
        [[0.0, 0.0], [2.0, 0.0]],  # p_fg = 1/2, σ(2)
        [[0.0, 0.0], [0.0, 0.0]],
    ]
    pred_spans = [  # (c, w) of the window's n = 8 frames, chosen to be exact in binary
        [[0.5, 0.5], [0.5, 0.5]],
        [[0.34375, 0.1875], [0.3125, 0.125]],  # frames [2, 3.5) and [2, 3)
        [[0.375, 0.375], [0.75, 0.25]],  # frames [1.5, 4.5) and [5, 7)
        [[0.5, 0.5], [0.5, 0.5]],
    ]
    outputs = {
        "logits": torch.tensor(logits),
        "pred_spans": torch.tensor(pred_spans),
        "window_logits": torch.tensor(window_logits)[:, None],
    }
    (result,) = processor.post_process_video_grounding(
        outputs,
        batch.window_metadata,
        frame_similarities=similarities,
        return_candidates=True,
        return_single_score_rankings=True,
    )
    assert result["window_ranking"].tolist() == [2, 1, 3, 0]
    # Pool order: window 2 then window 1, slots by proposal score. Matching score = the 2 best cosines of the frames
    # [max(⌊start⌋, 0), ⌈end⌉) of the window (w0 + frame for the video frame).
    a = [2, (5 + 4) * 0.5, (7 + 4) * 0.5, sigmoid(2) * sigmoid(2), 0.75 + -0.5]  # frames 9, 10
    b = [2, (1.5 + 4) * 0.5, (4.5 + 4) * 0.5, 0.5 * sigmoid(2), 0.9 + 0.5]  # frames 5-8: 0.9, 0.25, 0.5, 0.125
    c = [1, 2 * 0.5, 3 * 0.5, sigmoid(3) * sigmoid(1), 0.3]  # frame 2 only (fewer frames than k)
    d = [1, 2 * 0.5, 3.5 * 0.5, sigmoid(-2) * sigmoid(1), 0.3 + 0.4]  # frames 2, 3
    expected = np.array([a, b, c, d])
    assert_candidates_match_hand_values(result["candidates"].numpy(), expected, "candidates")
    assert result["candidates"][:, 3].tolist() == [0.7758, 0.4404, 0.6964, 0.0871]
    assert result["candidates"][:, 4].tolist() == [0.25, 1.4, 0.3, 0.7]
    # Fusion: min-max normalised rounded proposal (0.0871 … 0.7758) plus matching (0.25 … 1.4) scores.
    fusion = {
        "a": 1 + 0,
        "b": (0.4404 - 0.0871) / (0.7758 - 0.0871) + 1,
        "c": (0.6964 - 0.0871) / (0.7758 - 0.0871) + (0.3 - 0.25) / (1.4 - 0.25),
        "d": 0 + (0.7 - 0.25) / (1.4 - 0.25),
    }
    rows = {name: [*row[1:3], round(row[3], 4), round(row[4], 4)] for name, row in zip("abcd", expected, strict=True)}
    # Fusion order b, a, c, d; d ([1, 1.75] s) overlaps c ([1, 1.5] s) with IoU 0.5/0.75 > 0.5 and is suppressed.
    np.testing.assert_allclose(
        result["predictions"].numpy(), [[*rows[name], fusion[name]] for name in "bac"], rtol=0, atol=1e-9
    )
    assert result["prediction_sources"].tolist() == [[2, 0], [2, 1], [1, 1]]
    # Proposal only: a, c, b, d -> d suppressed by c. Matching only: b, d, c, a -> c suppressed by d.
    np.testing.assert_allclose(result["proposal_only"].numpy()[:, :4], [rows[name] for name in "acb"], atol=1e-9)
    np.testing.assert_allclose(result["matching_only"].numpy()[:, :4], [rows[name] for name in "bda"], atol=1e-9)
    # Scaled by σ(ρ) (Ego4D), the matching scores of window 2 and window 1 follow their window scores.
    (scaled,) = processor.post_process_video_grounding(
        outputs,
        batch.window_metadata,
        frame_similarities=similarities,
        scale_matching_by_window_score=True,
        return_candidates=True,
    )
    scaled_match = [0.25 * sigmoid(2), 1.4 * sigmoid(2), 0.3 * sigmoid(1), 0.7 * sigmoid(1)]
    np.testing.assert_allclose(scaled["candidates"][:, 4].numpy(), scaled_match, rtol=0, atol=5e-5 + 1e-6)


def test_frame_similarities_must_be_one_query_over_every_frame(postprocess_fixture):
    _, inputs, queries = postprocess_fixture
    index = queries["annA_0"]["index"]
    offsets, lengths = enumerate_windows(queries["annA_0"]["num_frames"], 40, 20)
    arrays = [torch.from_numpy(inputs[f"q{index}.{name}"]) for name in ("logits", "pred_spans", "window_logits")]
    settings = dict(
        nms_threshold=0.5,
        max_candidates_before_nms=200,
        max_predictions=100,
        matching_top_k_frames=3,
        **FIXTURE_SETTINGS[sorted(FIXTURE_SETTINGS)[0]],
    )
    num_frames = int((offsets + lengths).max())
    for wrong in (torch.zeros(num_frames, 2), torch.zeros(num_frames - 1)):
        with pytest.raises(ValueError, match="frame_similarities"):
            post_process_query(*arrays, offsets, lengths, None, None, frame_similarities=wrong, **settings)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"top_k_windows": 0}, "`top_k_windows` must be a positive integer"),
        ({"max_predictions": 0}, "`max_predictions` must be a positive integer"),
        ({"max_candidates_before_nms": 1.5}, "`max_candidates_before_nms` must be a positive integer"),
        ({"matching_top_k_frames": 0}, "`matching_top_k_frames` must be a positive integer"),
        ({"nms_threshold": -1.0}, r"`nms_threshold` must be in \[0, 1\]"),
        ({"seconds_per_frame": -0.2}, "`seconds_per_frame` must be positive"),
        ({"scale_matching_by_window_score": "no"}, "`scale_matching_by_window_score` must be a bool"),
        ({"window_offsets": "drop the last"}, "`window_offsets` and `window_lengths` must describe the same"),
        ({"window_logits": "drop the last"}, "must describe the 3 windows of `window_logits`"),
        ({"logits": "nan"}, "`logits` contains NaN"),
        ({"frame_similarities": "nan"}, "`frame_similarities` contains NaN"),
    ],
)
def test_post_process_query_checks_its_inputs(bad, match):
    offsets, lengths = enumerate_windows(57, 40, 20)
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        logits=torch.randn(len(offsets), 5, 2, generator=generator),
        pred_spans=torch.rand(len(offsets), 5, 2, generator=generator),
        window_logits=torch.randn(len(offsets), 1, generator=generator),
        window_offsets=offsets,
        window_lengths=lengths,
        video_features=None,
        sentence_embedding=None,
        frame_similarities=torch.randn(57, generator=generator),
        seconds_per_frame=0.2,
        top_k_windows=30,
        nms_threshold=0.5,
        max_candidates_before_nms=200,
        max_predictions=100,
        matching_top_k_frames=3,
        scale_matching_by_window_score=False,
    )
    assert len(post_process_query(**inputs)["predictions"]) > 0
    numpy_inputs = {name: value.numpy() if torch.is_tensor(value) else value for name, value in inputs.items()}
    assert torch.equal(post_process_query(**numpy_inputs)["predictions"], post_process_query(**inputs)["predictions"])
    for name, value in bad.items():
        if value == "drop the last":
            value = inputs[name][:-1]
        elif value == "nan":
            value = inputs[name].clone().fill_(float("nan"))
        inputs[name] = value
    with pytest.raises(ValueError, match=match):
        post_process_query(**inputs)


def test_post_process_query_needs_video_or_similarities(postprocess_fixture):
    _, inputs, queries = postprocess_fixture
    index = queries["annA_0"]["index"]
    offsets, lengths = enumerate_windows(queries["annA_0"]["num_frames"], 40, 20)
    arrays = [torch.from_numpy(inputs[f"q{index}.{name}"]) for name in ("logits", "pred_spans", "window_logits")]
    with pytest.raises(ValueError, match="frame_similarities"):
        post_process_query(
            *arrays,
            offsets,
            lengths,
            None,
            None,
            nms_threshold=0.5,
            max_candidates_before_nms=200,
            max_predictions=100,
            matching_top_k_frames=3,
            **FIXTURE_SETTINGS[sorted(FIXTURE_SETTINGS)[0]],
        )


@pytest.mark.parametrize("setting", sorted(FIXTURE_SETTINGS))
@pytest.mark.parametrize("query_id", HAZARD_QUERIES)
def test_hazard_queries_use_frame_ranges_clipped_to_the_window(postprocess_fixture, setting, query_id):
    """annE_0 / annF_3: a span ends past a short window's last valid frame. The original sliced the padded batch,
    normalised zero padding frames to NaN and let the NaN poison the matching score (and, for annE_0 where that row
    leads the pool, every fusion score). Spec §7.4 clips the range to the window's valid frames instead, so here the
    hazard row gets a finite, clipped matching score, every other candidate equals the original's, and the rankings
    equal the plain-Python reference applied to the corrected candidates."""
    outputs, inputs, queries = postprocess_fixture
    result, expected = run_fixture_query_through_processor(postprocess_fixture, query_id, setting)
    candidates = result["candidates"].numpy()
    original = np.asarray(expected["candidates"], dtype=np.float64)
    hazard = np.isnan(original[:, 4])
    assert hazard.sum() == 1 and np.isfinite(candidates).all()
    assert_rows_equal(candidates[~hazard, 1:], original[~hazard, 1:], "clean candidates")
    np.testing.assert_array_equal(candidates[hazard, :4], original[hazard, :4])
    reference = reference_matching(inputs, queries[query_id]["index"], queries[query_id]["num_frames"], setting)
    for window, start, end, _, match in candidates:
        assert match == pytest.approx(round(reference[(int(window), start, end)], 4), abs=1e-9)
    rankings = reference_rankings(candidates)
    assert_rows_equal(result["predictions"].numpy(), rankings["fusion"], "fusion")
    assert_rows_equal(result["proposal_only"].numpy(), rankings["proposal_only"], "proposal_only")
    assert_rows_equal(result["matching_only"].numpy(), rankings["matching_only"], "matching_only")
    assert np.isfinite(result["predictions"].numpy()).all()


def test_matching_scores_of_clean_queries_equal_a_loop_reference(postprocess_fixture):
    outputs, inputs, queries = postprocess_fixture
    for setting in FIXTURE_SETTINGS:
        for query_id in CLEAN_QUERIES:
            result, _ = run_fixture_query_through_processor(postprocess_fixture, query_id, setting)
            reference = reference_matching(
                inputs, queries[query_id]["index"], queries[query_id]["num_frames"], setting
            )
            for window, start, end, _, match in result["candidates"].numpy():
                assert match == pytest.approx(round(reference[(int(window), start, end)], 4), abs=1e-9)


def test_postprocess_results_do_not_depend_on_query_batching():
    rng = np.random.default_rng(10)
    video = rng.normal(size=(233, 8)).astype(np.float32)
    texts = [rng.normal(size=(length, 16)).astype(np.float32) for length in (3, 6, 4)]
    sentences = rng.normal(size=(3, 8)).astype(np.float32)
    processor = make_processor(top_k_windows=5, max_predictions=7)
    model = FakeGroundingModel(8, 16)

    def ground(query_ids):
        batch = processor(video_features=video, text_features=[texts[i] for i in query_ids])
        with torch.no_grad():
            outputs = model(**batch)
        return processor.post_process_video_grounding(
            outputs,
            batch.window_metadata,
            video_features=video,
            sentence_embeddings=sentences[query_ids],
            return_candidates=True,
            return_single_score_rankings=True,
        )

    together = ground([0, 1, 2])
    alone = [ground([i])[0] for i in range(3)]
    reversed_ = ground([2, 1, 0])[::-1]
    for query in range(3):
        assert len(together[query]["predictions"]) <= 7
        for key, value in together[query].items():
            torch.testing.assert_close(value, alone[query][key], rtol=0, atol=0, msg=key)
            torch.testing.assert_close(value, reversed_[query][key], rtol=0, atol=0, msg=key)


def test_postprocess_reads_outputs_of_only_the_grounded_pairs():
    """Outputs of the model run with `top_k_windows` (moments for `grounding_pair_index` only) post-process to the
    same results as full outputs; a kept window without moments is an error, not a NaN."""
    rng = np.random.default_rng(14)
    video = rng.normal(size=(233, 8)).astype(np.float32)
    processor = make_processor(top_k_windows=4)
    batch = processor(video_features=video, text_features=rng.normal(size=(3, 5, 16)).astype(np.float32))
    outputs = FakeGroundingModel(8, 16)(**batch)
    metadata = batch.window_metadata
    outputs["window_logits"][[1, 2]] = outputs["window_logits"][5].clone()  # ties
    kwargs = {"video_features": video, "sentence_embeddings": rng.normal(size=(3, 8)), "return_candidates": True}
    expected = processor.post_process_video_grounding(outputs, metadata, **kwargs)
    pair_query_index = torch.from_numpy(metadata.pair_query_index)
    index = select_top_windows(outputs["window_logits"], pair_query_index, 4)
    grounded = {**outputs, "logits": outputs["logits"][index], "pred_spans": outputs["pred_spans"][index]}
    results = processor.post_process_video_grounding({**grounded, "grounding_pair_index": index}, metadata, **kwargs)
    for result, reference in zip(results, expected, strict=True):
        for key, value in reference.items():
            torch.testing.assert_close(result[key], value, rtol=0, atol=0, msg=key)
    narrow = select_top_windows(outputs["window_logits"], pair_query_index, 3)
    too_few = {**outputs, "logits": outputs["logits"][narrow], "pred_spans": outputs["pred_spans"][narrow]}
    with pytest.raises(ValueError, match="no moments for them"):
        processor.post_process_video_grounding({**too_few, "grounding_pair_index": narrow}, metadata, **kwargs)
    for bad_index, match in ((index[:-1], "logits"), (index * 100, "grounding_pair_index"), (index.float(), "int64")):
        with pytest.raises(ValueError, match=match):
            processor.post_process_video_grounding({**grounded, "grounding_pair_index": bad_index}, metadata, **kwargs)


def test_postprocess_runs_its_operators_on_one_thread_and_restores_the_count():
    threads = torch.get_num_threads()
    seen = []
    original = processing_rgnet.post_process_queries

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    rng = np.random.default_rng(15)
    video = rng.normal(size=(90, 8)).astype(np.float32)
    processor = make_processor()
    batch = processor(video_features=video, text_features=rng.normal(size=(2, 3, 16)).astype(np.float32))
    outputs = FakeGroundingModel(8, 16)(**batch)
    torch.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(processing_rgnet, "post_process_queries", spy)
            processor.post_process_video_grounding(
                outputs, batch.window_metadata, video_features=video, sentence_embeddings=rng.normal(size=(2, 8))
            )
        assert seen == [1] and torch.get_num_threads() == 2  # one call for both queries
        with pytest.raises(RuntimeError), processing_rgnet.single_intra_op_thread():
            raise RuntimeError("restored on errors too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_postprocess_keyword_settings_override_the_processor_defaults():
    rng = np.random.default_rng(12)
    video = rng.normal(size=(150, 8)).astype(np.float32)
    processor = make_processor()
    batch = processor(video_features=video, text_features=rng.normal(size=(3, 16)).astype(np.float32))
    outputs = FakeGroundingModel(8, 16)(**batch)
    kwargs = {"video_features": video, "sentence_embeddings": rng.normal(size=8)}
    (default,) = processor.post_process_video_grounding(
        outputs, batch.window_metadata, **kwargs, return_candidates=True
    )
    # Outputs may be a mapping or an object with attributes (an `RGNetVideoGroundingOutput`).
    (from_attributes,) = processor.post_process_video_grounding(
        types.SimpleNamespace(**outputs), batch.window_metadata, **kwargs, return_candidates=True
    )
    for key, value in default.items():
        torch.testing.assert_close(from_attributes[key], value, rtol=0, atol=0)
    (narrow,) = processor.post_process_video_grounding(
        outputs, batch.window_metadata, top_k_windows=2, max_predictions=3, return_candidates=True, **kwargs
    )
    assert len(default["candidates"]) == 9 * 5 and len(narrow["candidates"]) == 2 * 5  # W = ceil(150/20) + 1
    assert len(narrow["predictions"]) <= 3
    (scaled,) = processor.post_process_video_grounding(
        outputs, batch.window_metadata, scale_matching_by_window_score=True, return_candidates=True, **kwargs
    )
    window_scores = torch.sigmoid(outputs["window_logits"][:, 0].float())[default["candidates"][:, 0].long()]
    assert not torch.equal(scaled["candidates"][:, 4], default["candidates"][:, 4])
    np.testing.assert_allclose(
        scaled["candidates"][:, 4], default["candidates"][:, 4] * window_scores.double(), atol=2e-4
    )


def test_postprocess_rejects_bad_inputs():
    rng = np.random.default_rng(13)
    video = rng.normal(size=(60, 8)).astype(np.float32)
    processor = make_processor()
    batch = processor(video_features=video, text_features=[np.ones((2, 16)), np.ones((3, 16))])
    outputs = FakeGroundingModel(8, 16)(**batch)
    metadata = batch.window_metadata
    good = {"video_features": video, "sentence_embeddings": rng.normal(size=(2, 8))}
    cases = [
        ({**outputs, "logits": outputs["logits"][:-1]}, metadata, good, "logits"),
        ({**outputs, "window_logits": None}, metadata, good, "window_logits"),
        ({**outputs, "pred_spans": outputs["pred_spans"] * float("nan")}, metadata, good, "pred_spans"),
        (outputs, metadata, {**good, "video_features": video[:-1]}, "video_features"),
        (outputs, metadata, {**good, "sentence_embeddings": rng.normal(size=(3, 8))}, "sentence_embeddings"),
        (outputs, metadata, {**good, "sentence_embeddings": rng.normal(size=(2, 6))}, "sentence_embeddings"),
        (outputs, batch, good, "window_metadata"),
        (outputs, metadata, {**good, "top_k_windows": 0}, "top_k_windows"),
        (outputs, metadata, {**good, "nms_threshold": -0.1}, "nms_threshold"),
        (tuple(outputs.values()), metadata, good, r"`outputs` is a tuple \(`return_dict=False`\); pass the model's"),
    ]
    for model_outputs, window_metadata, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            processor.post_process_video_grounding(model_outputs, window_metadata, **kwargs)
    broken = RGNetWindowMetadata(
        window_offsets=metadata.window_offsets,
        window_lengths=metadata.window_lengths,
        pair_query_index=metadata.pair_query_index,
        pair_window_index=np.zeros_like(metadata.pair_window_index),
        num_queries=2,
        num_frames=60,
        seconds_per_frame=0.2,
    )
    with pytest.raises(ValueError, match="every window"):
        processor.post_process_video_grounding(outputs, broken, **good)


def test_postprocess_takes_precomputed_frame_similarities():
    rng = np.random.default_rng(21)
    video = rng.normal(size=(120, 8)).astype(np.float32)
    sentences = rng.normal(size=(3, 8)).astype(np.float32)
    processor = make_processor()
    text = rng.normal(size=(3, 4, 16)).astype(np.float32)
    batch = processor(video_features=video, text_features=text)
    outputs = FakeGroundingModel(8, 16)(**batch)
    metadata = batch.window_metadata
    expected = processor.post_process_video_grounding(
        outputs, metadata, video_features=video, sentence_embeddings=sentences
    )
    similarities = frame_query_similarities(torch.from_numpy(video), torch.from_numpy(sentences))
    results = processor.post_process_video_grounding(outputs, metadata, frame_similarities=similarities)
    for result, reference in zip(results, expected, strict=True):
        for key, value in reference.items():
            assert torch.equal(result[key], value), key
    with pytest.raises(ValueError, match="or `frame_similarities`"):
        processor.post_process_video_grounding(outputs, metadata, video_features=video)
    with pytest.raises(ValueError, match="not both"):
        processor.post_process_video_grounding(
            outputs, metadata, frame_similarities=similarities, video_features=video, sentence_embeddings=sentences
        )
    with pytest.raises(ValueError, match=r"`frame_similarities` must have shape \(120, 3\)"):
        processor.post_process_video_grounding(outputs, metadata, frame_similarities=similarities.T)
    # One query: its (T,) column as frame_query_similarities returns it for a (Dc,) embedding.
    single = processor(video_features=video, text_features=text[:1])
    single_outputs = FakeGroundingModel(8, 16)(**single)
    (expected_single,) = processor.post_process_video_grounding(
        single_outputs, single.window_metadata, video_features=video, sentence_embeddings=sentences[0]
    )
    column = frame_query_similarities(torch.from_numpy(video), torch.from_numpy(sentences[0]))
    assert column.shape == (120,)
    (from_column,) = processor.post_process_video_grounding(
        single_outputs, single.window_metadata, frame_similarities=column
    )
    assert torch.equal(from_column["predictions"], expected_single["predictions"])


def test_frame_query_similarities_names_mismatched_inputs():
    video = torch.randn(10, 8)
    with pytest.raises(ValueError, match="width 8 like `video_features`, got 6"):
        frame_query_similarities(video, torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"`video_features` must have shape \(T, Dv\)"):
        frame_query_similarities(video[0], torch.randn(3, 8))


def test_precut_video_windows_give_the_same_batch():
    rng = np.random.default_rng(22)
    video = rng.normal(size=(130, 8)).astype(np.float32)
    text = [rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)]
    processor = make_processor()
    cut = processor.cut_windows(video)
    offsets, lengths = enumerate_windows(130, processor.max_window_frames, processor.window_stride)
    assert np.array_equal(cut.window_offsets, offsets) and np.array_equal(cut.window_lengths, lengths)
    assert cut.num_windows == len(offsets) and cut.num_frames == 130
    for share_windows in (False, True):
        expected = processor(video_features=video, text_features=text, share_windows=share_windows)
        batch = processor(video_windows=cut, text_features=text, share_windows=share_windows)
        assert batch.keys() == expected.keys()
        for key in expected:
            assert torch.equal(batch[key], expected[key]), key
        for name in ("window_offsets", "window_lengths", "pair_query_index", "pair_window_index"):
            assert np.array_equal(getattr(batch.window_metadata, name), getattr(expected.window_metadata, name))
        assert batch.window_metadata.num_frames == expected.window_metadata.num_frames == 130
    moved = cut.to("meta")
    assert moved.windows.device.type == "meta" and cut.windows.device.type == "cpu"
    assert cut == cut and cut != processor.cut_windows(video)  # compared by identity: tensors have no truth value
    with pytest.raises(ValueError, match="RGNetVideoWindows needs windows"):
        processing_rgnet.RGNetVideoWindows(cut.windows, cut.window_mask[:-1], offsets, lengths, 130)
    with pytest.raises(ValueError, match="one of `video_features`"):
        processor(video_features=video, video_windows=cut, text_features=text)
    with pytest.raises(ValueError, match="one of `video_features`"):
        processor(text_features=text)
    with pytest.raises(ValueError, match="must be an RGNetVideoWindows"):
        processor(video_windows=video, text_features=text)
    with pytest.raises(ValueError, match=r"shape \(T >= 1, Dv >= 1\)"):
        processor.cut_windows(video[0])


def test_windows_cut_on_a_device_from_half_precision_frames():
    """`cut_windows(..., device=...)` sends float16 and float32 frames in their own dtype and cuts them there (other
    dtypes and byte orders become float32 first): the windows of their float32 values; bad values are still refused."""
    video = np.random.default_rng(23).normal(size=(57, 8)).astype(np.float16)
    processor = make_processor()
    expected = processor.cut_windows(video.astype(np.float32))
    others = (video.astype(np.float64), video.astype(">f4"), torch.from_numpy(video).double())  # converted first
    for frames in (video, torch.from_numpy(video), *others):
        cut = processor.cut_windows(frames, device="cpu")
        assert cut.windows.dtype == torch.float32 and cut.windows.device.type == "cpu"
        assert torch.equal(cut.windows, expected.windows) and torch.equal(cut.window_mask, expected.window_mask)
    video[3, 2] = np.inf
    with pytest.raises(ValueError, match="`video_features` contains NaN or infinite"):
        processor.cut_windows(video, device="cpu")


@pytest.mark.parametrize("window_length", [40, 4])  # k = 5 frames: longer windows, and windows shorter than k
def test_queries_post_processed_together_match_each_alone(window_length):
    """`post_process_queries` (all queries of a video at once) gives each query, bit for bit, its own
    `post_process_query` result, with ranked or given window orders and tied scores and spans."""
    rng = np.random.default_rng(3)
    offsets, lengths = enumerate_windows(9 * window_length // 2 + 3, window_length, window_length // 2)
    num_queries, num_windows, num_frames = 6, len(offsets), int((offsets + lengths).max())
    logits = torch.from_numpy(rng.normal(size=(num_queries, num_windows, 4, 2)).astype(np.float32))
    spans = torch.from_numpy(rng.uniform(0.05, 0.6, size=(num_queries, num_windows, 4, 2)).astype(np.float32))
    spans[:, :, 1] = spans[:, :, 0]  # repeated spans, merged
    window_logits = torch.from_numpy(rng.normal(size=(num_queries, num_windows)).astype(np.float32))
    window_logits[:, 3] = window_logits[:, 1]  # exactly tied windows
    similarities = torch.from_numpy(rng.normal(size=(num_frames, num_queries)).astype(np.float32))
    settings = dict(
        seconds_per_frame=0.2,
        top_k_windows=5,
        nms_threshold=0.5,
        max_candidates_before_nms=12,
        max_predictions=7,
        matching_top_k_frames=5,
        scale_matching_by_window_score=True,
        return_candidates=True,
        return_single_score_rankings=True,
    )
    rankings = torch.stack([torch.from_numpy(rng.permutation(num_windows)) for _ in range(num_queries)])
    for given in (None, rankings):
        together = post_process_queries(
            logits, spans, window_logits, offsets, lengths, similarities, window_rankings=given, **settings
        )
        assert len(together) == num_queries
        for query, result in enumerate(together):
            alone = post_process_query(
                logits[query],
                spans[query],
                window_logits[query],
                offsets,
                lengths,
                None,
                None,
                frame_similarities=similarities[:, query],
                window_ranking=None if given is None else given[query],
                **settings,
            )
            assert result.keys() == alone.keys()
            for name, value in alone.items():
                assert torch.equal(result[name], value), (query, name)
    bad_inputs = [
        ({"frame_similarities": similarities.T.contiguous()}, "frame_similarities"),  # (Nq, T): transposed
        ({"frame_similarities": similarities[:-1]}, "frame_similarities"),  # a frame short
        ({"window_rankings": rankings[:, 1:]}, "permutation"),
        ({"pred_spans": spans[:, :-1]}, "pred_spans"),
    ]
    arguments = dict(logits=logits, pred_spans=spans, window_logits=window_logits, frame_similarities=similarities)
    for bad, match in bad_inputs:
        with pytest.raises(ValueError, match=match):
            post_process_queries(window_offsets=offsets, window_lengths=lengths, **{**arguments, **bad}, **settings)


def assert_bitwise_equal(actual, expected, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
    view = np.int64 if actual.dtype == np.float64 else actual.dtype  # NaN and the sign of zero count too
    np.testing.assert_array_equal(actual.view(view), expected.view(view), err_msg=name)


def per_query_rankings(candidates, nms_threshold, max_candidates_before_nms, max_predictions):
    """The per-query loop that ended `post_process_queries` before it was batched, on one query's own candidates:
    fusion, `merge_identical_spans`, then for each score a stable sort, the cut and `temporal_nms`.

    Returns the rows of `predictions`, `proposal_only` and `matching_only` by name, and the window each prediction
    comes from.
    """
    pool = np.column_stack(
        [candidates[:, 1:], min_max_normalize(candidates[:, 3]) + min_max_normalize(candidates[:, 4])]
    )
    _, last = merge_identical_spans(pool[:, :2])
    merged = pool[last]
    rankings, prediction_windows = {}, None
    for name, column in (("predictions", 4), ("proposal_only", 2), ("matching_only", 3)):
        order = np.argsort(-merged[:, column], kind="stable")[:max_candidates_before_nms]
        kept = order[temporal_nms(merged[order, :2], nms_threshold, max_predictions)]
        rankings[name] = merged[kept]
        if name == "predictions":
            prediction_windows = candidates[last[kept], 0].astype(np.int64)
    return rankings, prediction_windows


@pytest.mark.parametrize("block_pairs", [50, 1 << 16])  # NMS IoU in blocks of a few ranks, and all at once
def test_batched_post_processing_matches_the_per_query_loop(monkeypatch, block_pairs):
    """`post_process_queries` merges, ranks and suppresses all queries at once; each query must get, bit for bit,
    what the per-query loop gives on its own candidates: repeated spans merged differently per query (pools of
    different sizes), tied scores, NaN moments, cuts before and after NMS."""
    monkeypatch.setattr(processing_rgnet, "_NMS_BLOCK_PAIRS", block_pairs)
    rng = np.random.default_rng(24)
    offsets, lengths = enumerate_windows(187, 20, 10)
    num_queries, num_windows, num_slots = 7, len(offsets), 5
    logits = torch.from_numpy(
        np.round(rng.normal(size=(num_queries, num_windows, num_slots, 2)), 1).astype(np.float32)
    )
    centers = rng.integers(1, 8, size=(num_queries, num_windows, num_slots)) / 8
    widths = rng.integers(0, 4, size=(num_queries, num_windows, num_slots)) / 8  # zero-length spans too
    spans = torch.from_numpy(np.stack([centers, widths], axis=-1).astype(np.float32))
    for query in range(num_queries):  # a different number of repeated spans per query
        spans[query, :, : query % num_slots] = spans[query, :, :1]
    window_logits = torch.from_numpy(np.round(rng.normal(size=(num_queries, num_windows)), 1).astype(np.float32))
    similarities = torch.from_numpy(np.round(rng.normal(size=(200, num_queries)), 1).astype(np.float32))
    for nms_threshold, before, after in ((0.5, 200, 100), (0.3, 9, 4), (0.0, 40, 100), (1.0, 25, 12)):
        settings = dict(
            seconds_per_frame=0.5,
            top_k_windows=6,
            nms_threshold=nms_threshold,
            max_candidates_before_nms=before,
            max_predictions=after,
            matching_top_k_frames=3,
            scale_matching_by_window_score=True,
        )
        arguments = (logits, spans, window_logits, offsets, lengths, similarities)
        full = post_process_queries(*arguments, **settings, return_candidates=True, return_single_score_rankings=True)
        plain = post_process_queries(*arguments, **settings)
        assert {len(result["candidates"]) for result in full} == {6 * num_slots}
        assert len({len(merge_identical_spans(result["candidates"].numpy()[:, 1:3])[0]) for result in full}) > 1
        for query, (result, plain_result) in enumerate(zip(full, plain, strict=True)):
            assert set(result) - set(plain_result) == {"candidates", "proposal_only", "matching_only"}
            for name, value in plain_result.items():
                assert_bitwise_equal(value.numpy(), result[name].numpy(), (query, name))
            expected, windows = per_query_rankings(result["candidates"].numpy(), nms_threshold, before, after)
            for name, rows in expected.items():
                assert_bitwise_equal(result[name].numpy(), rows, (query, name))
            assert_bitwise_equal(result["prediction_sources"][:, 0].numpy(), windows, (query, "prediction_sources"))
            views = {"spans": slice(0, 2), "scores": 4, "proposal_scores": 2, "matching_scores": 3}
            for name, columns in views.items():
                assert_bitwise_equal(result[name].numpy(), result["predictions"][:, columns].numpy(), (query, name))


def test_post_processing_reads_moments_only_of_the_windows_it_keeps():
    """Moments of windows outside each query's `top_k_windows` best may be NaN (`top_k_windows` inference grounds
    only those); a NaN moment in a kept window is an error naming its output."""
    rng = np.random.default_rng(25)
    offsets, lengths = enumerate_windows(187, 20, 10)
    num_queries, num_windows = 3, len(offsets)
    logits = torch.from_numpy(rng.normal(size=(num_queries, num_windows, 5, 2)).astype(np.float32))
    spans = torch.from_numpy(rng.uniform(0.1, 0.4, size=(num_queries, num_windows, 5, 2)).astype(np.float32))
    window_logits = torch.from_numpy(rng.normal(size=(num_queries, num_windows)).astype(np.float32))
    similarities = torch.from_numpy(rng.normal(size=(187, num_queries)).astype(np.float32))
    settings = dict(
        seconds_per_frame=0.5,
        top_k_windows=4,
        nms_threshold=0.5,
        max_candidates_before_nms=200,
        max_predictions=10,
        matching_top_k_frames=3,
        scale_matching_by_window_score=False,
    )
    expected = post_process_queries(logits, spans, window_logits, offsets, lengths, similarities, **settings)
    kept = torch.argsort(window_logits, dim=1, descending=True, stable=True)[:, :4]
    not_kept = torch.ones(num_queries, num_windows, dtype=torch.bool).scatter_(1, kept, False)
    nan_logits, nan_spans = logits.clone(), spans.clone()
    nan_logits[not_kept], nan_spans[not_kept] = float("nan"), float("nan")
    results = post_process_queries(nan_logits, nan_spans, window_logits, offsets, lengths, similarities, **settings)
    for result, reference in zip(results, expected, strict=True):
        assert torch.equal(result["predictions"], reference["predictions"])
    nan_logits[1, kept[1, 3], 2] = float("nan")
    with pytest.raises(ValueError, match="`logits` contains NaN or infinite values in the windows kept"):
        post_process_queries(nan_logits, spans, window_logits, offsets, lengths, similarities, **settings)


# ---- Bad settings and malformed inputs get a clear error ----


def test_feature_only_processor_rejects_unknown_keyword_arguments(tokenizer, tmp_path):
    with pytest.raises(TypeError, match=r"Unexpected keyword argument\(s\) \['max_windw_frames'\]"):
        RGNetProcessor(max_windw_frames=10)
    with pytest.raises(TypeError, match="max_windw_frames"):  # as with a tokenizer (ProcessorMixin's check)
        RGNetProcessor(tokenizer, max_windw_frames=10)
    make_processor(max_window_frames=12, window_stride=6).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "RGNetProcessor" and "AutoProcessor" in config["auto_map"]
    for loader in (RGNetProcessor, AutoProcessor):
        with pytest.raises(TypeError, match=r"\['max_windw_frames'\] for a feature-only RGNetProcessor"):
            loader.from_pretrained(tmp_path, max_windw_frames=10)
    # The file's bookkeeping keys, loading options and real overrides are still accepted.
    loaded = RGNetProcessor.from_pretrained(tmp_path, local_files_only=True, revision=None, top_k_windows=4)
    assert (loaded.max_window_frames, loaded.window_stride, loaded.top_k_windows) == (12, 6, 4)
    assert AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True).window_stride == 6


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"seconds_per_frame": "0.2"}, "`seconds_per_frame` must be a finite number, got '0.2'"),
        ({"seconds_per_frame": float("inf")}, "`seconds_per_frame` must be a finite number, got inf"),
        ({"seconds_per_frame": True}, "`seconds_per_frame` must be a finite number"),
        ({"seconds_per_frame": 0.0}, "`seconds_per_frame` must be positive"),
        ({"nms_threshold": "0.5"}, "`nms_threshold` must be a finite number, got '0.5'"),
        ({"nms_threshold": float("nan")}, "`nms_threshold` must be a finite number"),
        ({"nms_threshold": 1.5}, r"`nms_threshold` must be in \[0, 1\]"),
        ({"scale_matching_by_window_score": "no"}, "`scale_matching_by_window_score` must be a bool"),
        ({"query_normalization": ["mad"]}, "Unknown `query_normalization`"),
    ],
)
def test_processor_settings_must_have_the_right_type(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_processor(**overrides)


def test_processor_flags_and_post_processing_settings_must_have_the_right_type():
    video, text = two_queries_and_a_video(5)
    processor = make_processor()
    for flags, match in [
        ({"share_windows": "no"}, "`share_windows` must be a bool .*, got 'no'"),
        ({"share_queries": 1}, "`share_queries` must be a bool"),
    ]:
        with pytest.raises(ValueError, match=match):
            processor(video_features=video, text_features=text, **flags)
    batch = processor(video_features=video, text_features=text)
    outputs = FakeGroundingModel(8, 16)(**batch)
    good = {"video_features": video, "sentence_embeddings": np.ones((2, 8), np.float32)}
    for settings, match in [
        ({"nms_threshold": "0.5"}, "`nms_threshold` must be a finite number, got '0.5'"),
        ({"scale_matching_by_window_score": "yes"}, "`scale_matching_by_window_score` must be a bool"),
        ({"return_candidates": "no"}, "`return_candidates` must be a bool"),
    ]:
        with pytest.raises(ValueError, match=match):
            processor.post_process_video_grounding(outputs, batch.window_metadata, **good, **settings)
    for seconds_per_frame in ("0.2", float("inf")):
        with pytest.raises(ValueError, match="`seconds_per_frame` must be a finite number"):
            moment_to_frames([1.0, 2.0], seconds_per_frame, 100)


@pytest.mark.parametrize(
    "item, match",
    [
        (None, r"`text_features\[1\]` must be an array of shape \(Lt, Dt\), got None"),
        ([[0.5, None]], r"`text_features\[1\]` must be a numeric array, got list with dtype object"),
        ("a cat", r"`text_features\[1\]` must be a numeric array, got str"),
    ],
)
def test_text_features_holding_none_or_text_name_the_query(item, match):
    video, text = two_queries_and_a_video(5)
    with pytest.raises(ValueError, match=match):
        make_processor()(video_features=video, text_features=[text[0], item])
    with pytest.raises(ValueError, match=match):
        prepare_text_features([text[0], item], 6)


@pytest.mark.parametrize("rows", [3, [0, 1], slice(4, 0, -1), slice(0, 4, 0)])
def test_select_pairs_needs_a_slice(rows):
    video, text = two_queries_and_a_video(5)
    batch = make_processor()(video_features=video, text_features=text, share_windows=True)
    with pytest.raises(ValueError, match=r"`rows` must be a slice of pairs"):
        select_pairs(batch, rows)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("seconds_per_frame", float("inf"), "`seconds_per_frame` must be a finite number"),
        ("seconds_per_frame", -0.2, "`seconds_per_frame` must be positive"),
        ("seconds_per_frame", "0.2", "`seconds_per_frame` must be a finite number"),
        ("window_offsets", np.array([-1, 0, 20, 40]), r"`window_offsets` must be >= 0: window 0 has offset -1"),
        ("window_lengths", np.array([20, 0, 37, 17]), r"`window_lengths` must be >= 1: window 1"),
        ("window_lengths", np.array([20, 40, 37]), r"must describe the same W >= 1 windows, got 4 and 3"),
        ("window_lengths", np.array([20.0, 40.0, 37.0, 17.0]), r"`window_lengths` must be a 1-D integer array"),
        ("num_frames", 50, r"`window_offsets \+ window_lengths` must be <= num_frames \(50\): window 2"),
        ("num_frames", 0, "`num_frames` must be a positive integer"),
        ("num_queries", 0, "`num_queries` must be a positive integer"),
        ("pair_query_index", np.array([0, 0, 0, 0, 1, 1, 1, 2]), r"`pair_query_index` must lie in \[0, 2\): pair 7"),
        ("pair_window_index", np.array([0, 1, 2, 3, 0, 1, 2, -1]), r"`pair_window_index` must lie in \[0, 4\)"),
        ("pair_window_index", np.arange(4), "one entry per pair, got 8 and 4"),
    ],
)
def test_window_metadata_rejects_inconsistent_values(field, value, match):
    video, text = two_queries_and_a_video(5)
    metadata = make_processor()(video_features=video, text_features=text).window_metadata
    assert dataclasses.replace(metadata).num_pairs == 8  # the processor's own metadata is consistent
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(metadata, **{field: value})


def test_video_windows_reject_lengths_contradicting_the_mask_or_the_video():
    video, _ = two_queries_and_a_video(5)
    cut = make_processor().cut_windows(video)  # 57 frames: offsets [0, 0, 20, 40], lengths [20, 40, 37, 17]
    mask = cut.window_mask.clone()
    mask[3, 17] = 1
    with pytest.raises(ValueError, match=r"`window_mask` must be 1 on the first `window_lengths` .*window 3"):
        dataclasses.replace(cut, window_mask=mask)
    with pytest.raises(ValueError, match=r"`window_mask` must be 1 .*window 0 \(length 19\)"):
        dataclasses.replace(cut, window_lengths=cut.window_lengths - np.array([1, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"at most the padded length 40 of `windows`: window 1 has length 41"):
        dataclasses.replace(cut, window_lengths=cut.window_lengths + np.array([0, 1, 0, 0]), num_frames=100)
    with pytest.raises(ValueError, match=r"<= num_frames \(50\): window 2"):
        dataclasses.replace(cut, num_frames=50)
    assert dataclasses.replace(cut.to("meta")).windows.device.type == "meta"  # an accelerator mask is not read
