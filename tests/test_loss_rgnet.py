"""Tests of `loss_rgnet`: span geometry, Hungarian matching, label checks, every loss term, and parity with the
original implementation's criterion on the reference fixtures (`rgnet_tiny_mad`, `rgnet_tiny_ego4d`)."""

import json
import math
import re

import pytest
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file

from configuration_rgnet import RGNetConfig
from loss_rgnet import (
    RGNetHungarianMatcher,
    RGNetLoss,
    generalized_temporal_iou,
    span_cxw_to_xx,
    span_xx_to_cxw,
    temporal_iou,
    validate_labels,
    weighted_loss_sum,
)
from modeling_rgnet import RGNetForVideoGrounding

from .conftest import FIXTURE_TO_CONFIG_FIELD
from .test_modeling_rgnet import RGNetModelTester

FIXTURE_NAMES = ("rgnet_tiny_mad", "rgnet_tiny_ego4d")
# ---- helpers ----


def make_config(**overrides) -> RGNetConfig:
    """A config with a 2-layer decoder and 2 moment slots unless overridden."""
    return RGNetConfig(**{"num_decoder_layers": 2, "num_moment_queries": 2, **overrides})


def make_labels(batch_mode, spans, positive_frames, negative_frames):
    return {
        "batch_mode": batch_mode,
        "spans": torch.tensor(spans, dtype=torch.float32),
        "saliency_positive_frames": torch.tensor(positive_frames, dtype=torch.int64),
        "saliency_negative_frames": torch.tensor(negative_frames, dtype=torch.int64),
    }


def softplus(value: float) -> float:
    return math.log1p(math.exp(value))


# ---- span geometry ----


def test_span_conversions_on_hand_worked_spans():
    cxw = torch.tensor([[0.5, 0.4], [0.25, 0.5], [0.0, 0.0]])
    xx = torch.tensor([[0.3, 0.7], [0.0, 0.5], [0.0, 0.0]])
    torch.testing.assert_close(span_cxw_to_xx(cxw), xx)
    torch.testing.assert_close(span_xx_to_cxw(xx), cxw)
    batched = torch.rand(3, 4, 2)
    torch.testing.assert_close(span_xx_to_cxw(span_cxw_to_xx(batched)), batched)


def test_span_conversions_reject_a_last_dimension_other_than_2():
    with pytest.raises(ValueError, match="spans"):
        span_cxw_to_xx(torch.zeros(3, 3))


def test_temporal_iou_is_pairwise_with_union():
    spans1 = torch.tensor([[0.0, 2.0], [1.0, 3.0]])
    spans2 = torch.tensor([[1.0, 2.0], [0.0, 4.0], [5.0, 6.0]])
    iou, union = temporal_iou(spans1, spans2)
    # [0,2] vs [1,2]: inter 1, union 2; vs [0,4]: inter 2, union 4; vs [5,6]: inter 0, union 3.
    # [1,3] vs [1,2]: inter 1, union 2; vs [0,4]: inter 2, union 4; vs [5,6]: inter 0, union 3.
    torch.testing.assert_close(union, torch.tensor([[2.0, 4.0, 3.0], [2.0, 4.0, 3.0]]))
    torch.testing.assert_close(iou, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]))


@pytest.mark.parametrize(
    ("span1", "span2", "expected"),
    [
        ((0.0, 1.0), (2.0, 3.0), -1.0 / 3.0),  # disjoint: iou 0, union 2, hull 3
        ((0.0, 4.0), (1.0, 2.0), 0.25),  # contained: iou 1/4, hull = union
        ((0.0, 1.0), (1.0, 2.0), 0.0),  # touching: iou 0, hull = union = 2
        ((0.2, 0.6), (0.2, 0.6), 1.0),  # identical
        ((0.0, 2.0), (1.0, 4.0), 1.0 / 4.0),  # overlapping: inter 1, union 4, hull 4
    ],
)
def test_generalized_temporal_iou_on_hand_worked_pairs(span1, span2, expected):
    forward = generalized_temporal_iou(torch.tensor([span1]), torch.tensor([span2]))
    backward = generalized_temporal_iou(torch.tensor([span2]), torch.tensor([span1]))
    assert forward.shape == (1, 1)
    assert forward.item() == pytest.approx(expected, abs=1e-6)
    assert backward.item() == pytest.approx(expected, abs=1e-6)


def test_generalized_temporal_iou_shapes_and_batch_dimensions():
    spans1 = span_cxw_to_xx(torch.rand(4, 5, 2))
    spans2 = span_cxw_to_xx(torch.rand(4, 3, 2))
    batched = generalized_temporal_iou(spans1, spans2)
    assert batched.shape == (4, 5, 3)
    torch.testing.assert_close(batched[2], generalized_temporal_iou(spans1[2], spans2[2]))


def test_malformed_spans_raise_value_error_naming_the_argument():
    good = torch.tensor([[0.0, 1.0]])
    bad = torch.tensor([[0.6, 0.4]])
    with pytest.raises(ValueError, match="spans1"):
        generalized_temporal_iou(bad, good)
    with pytest.raises(ValueError, match="spans2"):
        temporal_iou(good, bad)
    with pytest.raises(ValueError, match="spans1"):
        generalized_temporal_iou(torch.tensor([0.0, 1.0]), good)


# ---- matcher ----


def test_matcher_picks_the_cheapest_slot_per_window():
    matcher = RGNetHungarianMatcher(make_config())
    # Window 0: slot 0 sits on the target; window 1: slot 1 does.
    pred_spans = torch.tensor([[[0.5, 0.4], [0.9, 0.1]], [[0.8, 0.2], [0.25, 0.5]]])
    logits = torch.zeros(2, 2, 2)
    target_spans = torch.tensor([[0.5, 0.4], [0.25, 0.5]])
    assert matcher(logits, pred_spans, target_spans).tolist() == [0, 1]


def test_matcher_cost_matches_hand_computation():
    config = make_config(matcher_span_l1_cost=10.0, matcher_giou_cost=1.0, matcher_class_cost=4.0)
    matcher = RGNetHungarianMatcher(config)
    pred_spans = torch.tensor([[[0.5, 0.2]]])  # [0.4, 0.6]
    target_spans = torch.tensor([[[0.5, 0.4]]])  # [0.3, 0.7]
    logits = torch.tensor([[[2.0, 0.0]]])
    foreground = 1.0 / (1.0 + math.exp(-2.0))
    expected = 10.0 * 0.2 - 1.0 * 0.5 - 4.0 * foreground  # L1 0 + 0.2; GIoU = IoU = 0.5 (hull = union)
    assert matcher.cost_matrix(logits, pred_spans, target_spans).item() == pytest.approx(expected, abs=1e-6)


def test_matcher_replaces_nan_costs_and_never_prefers_them():
    matcher = RGNetHungarianMatcher(make_config(num_moment_queries=3))
    logits = torch.tensor([[[float("nan"), 0.0], [0.0, 0.0], [0.0, 3.0]]])
    pred_spans = torch.tensor([[[0.5, 0.4], [0.7, 0.4], [0.5, 0.4]]])
    target_spans = torch.tensor([[0.5, 0.4]])
    cost = matcher.cost_matrix(logits, pred_spans, target_spans[:, None])
    assert torch.isfinite(cost).all()
    # Slot 0 has a perfect span but a NaN probability; slot 2 has the same span and a finite cost.
    assert matcher(logits, pred_spans, target_spans).tolist() == [2]
    all_nan = torch.full_like(logits, float("nan"))
    assert 0 <= matcher(all_nan, pred_spans, target_spans).item() < 3


def test_matcher_breaks_ties_towards_the_lowest_slot_and_ignores_batching():
    matcher = RGNetHungarianMatcher(make_config(num_moment_queries=3))
    tied_spans = torch.tensor([[[0.2, 0.1], [0.5, 0.3], [0.5, 0.3]]])
    assert matcher(torch.zeros(1, 3, 2), tied_spans, torch.tensor([[0.5, 0.3]])).tolist() == [1]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 2, generator=generator)
    pred_spans = torch.rand(6, 3, 2, generator=generator)
    target_spans = torch.rand(6, 2, generator=generator)
    batched = matcher(logits, pred_spans, target_spans)
    one_by_one = torch.cat(
        [matcher(logits[i : i + 1], pred_spans[i : i + 1], target_spans[i : i + 1]) for i in range(6)]
    )
    assert batched.tolist() == one_by_one.tolist()
    assert batched.dtype == torch.long


def test_matcher_on_stacked_decoder_layers_matches_each_layer_alone():
    matcher = RGNetHungarianMatcher(make_config(num_moment_queries=4))
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 4, 2, generator=generator)  # (L, B, Q, 2)
    pred_spans = torch.rand(3, 5, 4, 2, generator=generator)
    target_spans = torch.rand(5, 2, generator=generator)
    stacked = matcher(logits, pred_spans, target_spans)
    assert stacked.shape == (3, 5)
    assert stacked.tolist() == [matcher(logits[i], pred_spans[i], target_spans).tolist() for i in range(3)]


def test_matcher_equals_scipy_hungarian_assignment():
    """The argmin over slots is the Hungarian solution of each window's one-target problem: scipy's solver, run
    window by window on the same costs (ties and replaced NaN costs included), picks the same slots."""
    from scipy.optimize import linear_sum_assignment

    matcher = RGNetHungarianMatcher(make_config(num_moment_queries=5))
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 7, 5, 2, generator=generator)  # (L, B, Q, 2)
    pred_spans = torch.rand(4, 7, 5, 2, generator=generator)
    pred_spans[0, 1, 3:] = pred_spans[0, 1, 2]  # tied slots
    logits[0, 1, 3:] = logits[0, 1, 2]
    logits[1, 2, 0] = float("nan")
    target_spans = torch.rand(7, 2, generator=generator)
    cost = matcher.cost_matrix(logits, pred_spans, target_spans[:, None]).numpy()  # (L, B, Q, 1)
    expected = [[int(linear_sum_assignment(window)[0][0]) for window in layer] for layer in cost]
    assert matcher(logits, pred_spans, target_spans).tolist() == expected


def test_matcher_rejects_all_zero_costs():
    with pytest.raises(ValueError, match="are all 0"):  # the config itself refuses them
        make_config(matcher_span_l1_cost=0, matcher_giou_cost=0, matcher_class_cost=0)
    config = make_config(matcher_giou_cost=0, matcher_class_cost=0)
    config.matcher_span_l1_cost = 0  # fields set one by one are not checked against each other
    with pytest.raises(ValueError, match="config"):
        RGNetHungarianMatcher(config)


# ---- label validation ----


def _valid_labels(batch_mode="cross_pairs"):
    return make_labels(batch_mode, [[0.5, 0.4], [0.25, 0.5]], [[1], [2]], [[3], [0]])


def test_validate_labels_accepts_both_batch_modes():
    validate_labels(_valid_labels("cross_pairs"), 4, num_frames=4)
    validate_labels(_valid_labels("paired_negative"), 4, num_frames=4)


@pytest.mark.parametrize("missing", ["batch_mode", "spans", "saliency_positive_frames", "saliency_negative_frames"])
def test_validate_labels_names_the_missing_key(missing):
    labels = _valid_labels()
    del labels[missing]
    with pytest.raises(ValueError, match=missing):
        validate_labels(labels, 4)


def test_validate_labels_rejects_an_unknown_batch_mode():
    labels = {**_valid_labels(), "batch_mode": "cross"}
    with pytest.raises(ValueError, match="batch_mode"):
        validate_labels(labels, 4)


@pytest.mark.parametrize(("batch_mode", "num_pairs"), [("cross_pairs", 2), ("cross_pairs", 5), ("paired_negative", 3)])
def test_validate_labels_checks_the_pair_count(batch_mode, num_pairs):
    # B = 2: cross_pairs needs B² = 4 pairs, paired_negative 2B = 4.
    with pytest.raises(ValueError, match="pairs"):
        validate_labels(_valid_labels(batch_mode), num_pairs)


def test_validate_labels_checks_shapes_dtypes_and_ranges():
    labels = _valid_labels()
    with pytest.raises(ValueError, match="spans"):
        validate_labels({**labels, "spans": torch.zeros(2, 3)}, 4)
    with pytest.raises(ValueError, match="spans"):
        validate_labels({**labels, "spans": torch.tensor([[0.5, -0.1], [0.5, 0.1]])}, 4)
    with pytest.raises(ValueError, match="saliency_positive_frames"):
        validate_labels({**labels, "saliency_positive_frames": torch.tensor([[1], [2]], dtype=torch.int32)}, 4)
    with pytest.raises(ValueError, match="saliency_negative_frames"):
        validate_labels({**labels, "saliency_negative_frames": torch.tensor([[1, 2], [2, 3]])}, 4)
    with pytest.raises(ValueError, match="saliency_negative_frames"):
        validate_labels(labels, 4, num_frames=3)  # frame 3 is outside a 3-frame window


@pytest.mark.parametrize(
    "spans",
    [
        [[0.5, 0.4], [0.05, 0.2]],  # window 1 starts at -0.05
        [[0.5, 0.4], [0.95, 0.2]],  # window 1 ends at 1.05
        [[0.5, 0.4], [0.3, 0.9]],  # window 1 given as (start, end) = [0.3, 0.9]
        [[0.5, 0.4], [12.5, 3.0]],  # window 1 given in seconds
    ],
)
def test_validate_labels_rejects_spans_outside_the_window(spans):
    labels = {**_valid_labels(), "spans": torch.tensor(spans)}
    with pytest.raises(ValueError, match=r"labels\['spans'\].*inside the window.*window 1 .*\(start, end\) pairs"):
        validate_labels(labels, 4)


def test_validate_labels_accepts_spans_on_the_window_edges():
    # [0, 1] exactly, a span starting at 0, zero-width spans on either edge, and an end 5e-5 past 1 (inside the
    # tolerance for float32 rounding of real targets).
    spans = [[0.5, 1.0], [0.1, 0.2], [0.0, 0.0], [1.0, 0.0], [0.95, 0.1 + 1e-4]]
    labels = make_labels("paired_negative", spans, [[1]] * len(spans), [[0]] * len(spans))
    validate_labels(labels, 2 * len(spans), num_frames=4, video_mask=torch.ones(2 * len(spans), 4))
    # One float16 step past 1 (end = 1 + 2**-10) is rounding in half-precision labels, a mistake in float32 ones.
    one_step_past = make_labels("paired_negative", [[0.5, 1.0 + 2**-9]], [[1]], [[0]])
    validate_labels({**one_step_past, "spans": one_step_past["spans"].half()}, 2)
    with pytest.raises(ValueError, match="inside the window"):
        validate_labels(one_step_past, 2)


@pytest.mark.parametrize(
    ("batch_mode", "masked_pair", "key", "message"),
    [
        # Cross pairs: positive window 0 is pair 0; its negative frame 3 lies in the padding.
        ("cross_pairs", 0, "saliency_negative_frames", "window 0 has 3 valid frames of 4.*frame 3"),
        # Paired negative: positive window 1 is pair 1; with 2 valid frames, its positive frame 2 is padding.
        ("paired_negative", 1, "saliency_positive_frames", "window 1 has 2 valid frames of 4.*frame 2"),
    ],
)
def test_validate_labels_checks_frames_against_the_valid_frames_of_each_positive_window(
    batch_mode, masked_pair, key, message
):
    labels = _valid_labels(batch_mode)  # positive frames [[1], [2]], negative frames [[3], [0]]
    video_mask = torch.ones(4, 4)
    video_mask[masked_pair, 3 - masked_pair :] = 0
    validate_labels(labels, 4, num_frames=4)  # the padded length alone lets the frame through
    with pytest.raises(ValueError, match=rf"labels\['{key}'\].*valid \(unpadded\).*{message}"):
        validate_labels(labels, 4, video_mask=video_mask)
    # Padding in a pair that is not a positive window is not the labels' business.
    other_pair = 1 if batch_mode == "cross_pairs" else 3
    video_mask = torch.ones(4, 4)
    video_mask[other_pair, 1:] = 0
    validate_labels(labels, 4, video_mask=video_mask.bool())


def test_validate_labels_rejects_a_video_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"video_mask.*\(4, 4\)"):
        validate_labels(_valid_labels(), 4, num_frames=4, video_mask=torch.ones(4, 5))
    with pytest.raises(ValueError, match=r"video_mask.*\(4, Lv\)"):
        validate_labels(_valid_labels(), 4, video_mask=torch.ones(3, 4))


def test_loss_rejects_saliency_frames_on_padded_frames():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=False))
    outputs, labels, video_mask = _paired_negative_batch()
    video_mask[1, 2:] = 0  # positive window 1 keeps 2 valid frames; its positive frame is 2
    with pytest.raises(ValueError, match="saliency_positive_frames.*window 1 has 2 valid frames"):
        criterion(outputs, labels, video_mask)


def test_validate_labels_rejects_a_saliency_pair_on_one_frame():
    labels = _valid_labels()
    same = {**labels, "saliency_negative_frames": labels["saliency_positive_frames"].clone()}
    with pytest.raises(ValueError, match=r"saliency_negative_frames.*window 0, pair 0 has frame 1 in both"):
        validate_labels(same, 4)
    # Frame 0 in both is how the sampler marks a target covering the whole window (spec §6.1 step 6).
    covering = make_labels("cross_pairs", [[0.5, 1.0], [0.25, 0.5]], [[0, 1], [2, 1]], [[0, 0], [3, 0]])
    validate_labels(covering, 4, num_frames=4)


@pytest.mark.parametrize(
    ("rename", "extra", "message"),
    [
        ({"spans": "span"}, {}, r"unknown key\(s\) \['span'\] \(\['spans'\] missing"),
        ({}, {"saliency_scores": torch.zeros(2, 4)}, r"unknown key\(s\) \['saliency_scores'\];"),
    ],
)
def test_validate_labels_names_unknown_keys_and_the_accepted_ones(rename, extra, message):
    labels = {rename.get(key, key): value for key, value in _valid_labels().items()} | extra
    accepted = "('batch_mode', 'spans', 'saliency_positive_frames', 'saliency_negative_frames')"
    with pytest.raises(ValueError, match=message + ".*accepted keys are " + re.escape(accepted)):
        validate_labels(labels, 4)


# ---- each term on a two-query batch, computed by hand ----

# Targets: window 0 (0.5, 0.4) = [0.3, 0.7]; window 1 (0.25, 0.5) = [0.0, 0.5]. Q = 2 slots, Lv = 4 frames.
# Positive window 0: slot 0 (0.5, 0.2) = [0.4, 0.6] is matched; positive window 1: slot 1 (0.25, 0.3) = [0.1, 0.4].
POSITIVE_SPANS = [[[0.5, 0.2], [0.9, 0.1]], [[0.8, 0.2], [0.25, 0.3]]]
POSITIVE_LOGITS = [[[2.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [1.0, 0.0]]]
POSITIVE_SALIENCY = [[0.0, 0.5, 0.1, 0.45], [0.3, 0.0, 0.9, 0.0]]
# Hand values shared by both batch modes.
EXPECTED_SPAN = (0.2 + 0.2) / 4  # width errors 0.2 and 0.2 over B×2 = 4 coordinates
EXPECTED_GIOU = ((1 - 0.5) + (1 - 0.6)) / 2  # both predictions lie inside their target: GIoU = IoU
POSITIVE_SLOT_CE = [
    softplus(-2.0),  # window 0 slot 0, foreground, weight 1
    0.1 * softplus(-2.0),  # window 0 slot 1, background [0, 2]
    0.1 * math.log(2.0),  # window 1 slot 0, background [0, 0]
    softplus(-1.0),  # window 1 slot 1, foreground [1, 0]
]
# Ranking: window 0: 0.2 + s[3] − s[1] = 0.15; window 1: 0.2 + 0.3 − 0.9 < 0.
EXPECTED_RANKING = 0.15 / 2 * 2


def _cross_pairs_batch():
    """B = 2 cross pairs (N = 4); rows 0 and 3 are the positives, the others are filler."""
    logits = torch.full((4, 2, 2), 7.0)
    pred_spans = torch.full((4, 2, 2), 0.5)
    saliency = torch.full((4, 4), -3.0)
    logits[[0, 3]] = torch.tensor(POSITIVE_LOGITS)
    pred_spans[[0, 3]] = torch.tensor(POSITIVE_SPANS)
    saliency[[0, 3]] = torch.tensor(POSITIVE_SALIENCY)
    window_logits = torch.tensor([[1.0], [0.0], [0.5], [2.0]])
    outputs = {"logits": logits, "pred_spans": pred_spans, "window_logits": window_logits, "saliency_scores": saliency}
    return outputs, _valid_labels("cross_pairs"), torch.ones(4, 4)


def _paired_negative_batch():
    """B = 2 (N = 4): rows 0-1 the positive windows, rows 2-3 the negative windows (row 3 has 2 valid frames)."""
    negative_logits = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]])
    negative_saliency = torch.tensor([[0.1, -0.2, 0.3, 0.0], [-1.0, 0.2, 0.8, 0.4]])
    outputs = {
        "logits": torch.cat([torch.tensor(POSITIVE_LOGITS), negative_logits]),
        "pred_spans": torch.cat([torch.tensor(POSITIVE_SPANS), torch.full((2, 2, 2), 0.5)]),
        "window_logits": torch.tensor([[1.0], [0.5], [1.1], [-2.0]]),
        "saliency_scores": torch.cat([torch.tensor(POSITIVE_SALIENCY), negative_saliency]),
    }
    video_mask = torch.tensor([[1.0] * 4, [1.0] * 4, [1.0] * 4, [1.0, 1.0, 0.0, 0.0]])
    return outputs, _valid_labels("paired_negative"), video_mask


def test_each_term_on_a_cross_pairs_batch_by_hand():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=False, contrastive_temperature=0.5))
    outputs, labels, video_mask = _cross_pairs_batch()
    loss, loss_dict, metrics = criterion(outputs, labels, video_mask)
    assert criterion.matched_slots(outputs, labels).tolist() == [[0, 1]]
    assert loss_dict["loss_span"].item() == pytest.approx(EXPECTED_SPAN, abs=1e-6)
    assert loss_dict["loss_giou"].item() == pytest.approx(EXPECTED_GIOU, abs=1e-6)
    assert loss_dict["loss_label"].item() == pytest.approx(sum(POSITIVE_SLOT_CE) / 4, abs=1e-6)
    assert loss_dict["loss_saliency"].item() == pytest.approx(EXPECTED_RANKING, abs=1e-6)
    # Z / 0.5 = [[2, 0], [1, 4]]: rows (queries) and columns (windows), diagonal targets.
    rows = softplus(-2.0) + softplus(-3.0)
    columns = softplus(-1.0) + softplus(-4.0)
    assert loss_dict["loss_retrieval"].item() == pytest.approx(0.5 * (rows / 2 + columns / 2), abs=1e-6)
    assert metrics == {"class_error": pytest.approx(0.0)}


def test_each_term_on_a_paired_negative_batch_by_hand():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=False))
    outputs, labels, video_mask = _paired_negative_batch()
    loss, loss_dict, metrics = criterion(outputs, labels, video_mask)
    assert loss_dict["loss_span"].item() == pytest.approx(EXPECTED_SPAN, abs=1e-6)
    assert loss_dict["loss_giou"].item() == pytest.approx(EXPECTED_GIOU, abs=1e-6)
    # The negative windows' 4 slots are background (weight 0.1); mean over B×2Q = 8 slots.
    negative_slot_ce = 0.1 * (softplus(-1.0) + math.log(2.0) + softplus(2.0) + math.log(2.0))
    assert loss_dict["loss_label"].item() == pytest.approx((sum(POSITIVE_SLOT_CE) + negative_slot_ce) / 8, abs=1e-6)
    # Hardest negative frame: 0.3 (window 0), 0.8 (window 1, a padded position: the max includes padding).
    hardest = (max(0.0, 0.2 + 0.3 - 0.5) + max(0.0, 0.2 + 0.8 - 0.9)) / 2 * 2
    negative_sum = (
        sum(softplus(s) for s in (0.1, -0.2, 0.3, 0.0)) + sum(softplus(s) for s in (-1.0, 0.2))  # valid frames only
    ) / 2
    assert loss_dict["loss_saliency"].item() == pytest.approx(EXPECTED_RANKING + hardest + negative_sum, abs=1e-6)
    # Hinge on raw logits: window 0: 0.2 + 1.1 − 1.0 = 0.3; window 1: 0.2 − 2.0 − 0.5 < 0.
    assert loss_dict["loss_retrieval"].item() == pytest.approx(2 * 0.3 / 2, abs=1e-6)
    assert metrics["class_error"].item() == 0.0


def test_auxiliary_label_loss_appends_the_negative_windows_last_layer_logits():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=True, num_decoder_layers=2))
    outputs, labels, video_mask = _paired_negative_batch()
    auxiliary_logits = outputs["logits"].clone()
    auxiliary_logits[2:] = 10.0 * torch.tensor([[[1.0, 0.0]]])  # layer-0 negatives: confidently foreground
    outputs["auxiliary_outputs"] = [{"logits": auxiliary_logits, "pred_spans": outputs["pred_spans"]}]
    _, loss_dict, _ = criterion(outputs, labels, video_mask)
    # The original reads the negative windows' last-layer logits for every layer, so layer 0 equals the last one.
    assert loss_dict["loss_label_0"].item() == pytest.approx(loss_dict["loss_label"].item(), abs=1e-7)


def test_class_error_counts_matched_slots_not_predicted_foreground():
    outputs, labels, video_mask = _cross_pairs_batch()
    outputs["logits"][3, 1] = torch.tensor([0.0, 1.0])  # window 1's matched slot now predicts background
    _, _, metrics = RGNetLoss(make_config(use_auxiliary_loss=False))(outputs, labels, video_mask)
    assert metrics["class_error"].item() == pytest.approx(50.0)


# ---- total and weights ----


def test_total_is_the_weighted_sum_of_every_term():
    config = make_config(use_auxiliary_loss=True, num_decoder_layers=3, retrieval_loss_weight=10.0)
    criterion = RGNetLoss(config)
    outputs, labels, video_mask = _paired_negative_batch()
    outputs["auxiliary_outputs"] = [
        {"logits": outputs["logits"] * scale, "pred_spans": outputs["pred_spans"]} for scale in (0.5, 2.0)
    ]
    loss, loss_dict, metrics = criterion(outputs, labels, video_mask)
    final = ["loss_span", "loss_giou", "loss_label", "loss_saliency", "loss_retrieval"]
    auxiliary = [f"{term}_{layer}" for layer in (0, 1) for term in ("loss_span", "loss_giou", "loss_label")]
    assert list(loss_dict) == final + auxiliary
    assert set(metrics) == {"class_error", "class_error_0", "class_error_1"}
    weight_of = {"span": 10.0, "giou": 1.0, "label": 4.0, "saliency": 1.0, "retrieval": 10.0}
    expected = sum(weight_of[name.split("_")[1]] * value for name, value in loss_dict.items())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(loss_dict) <= set(criterion.loss_weights)


@pytest.mark.parametrize("batch", [_cross_pairs_batch, _paired_negative_batch])
def test_each_auxiliary_layer_gets_the_terms_of_that_layer_alone(batch):
    """All decoder layers are matched and scored at once; each layer's terms equal a last-layer-only criterion run on
    that layer's outputs (with the last layer's negative-window logits, the original's label-loss quirk)."""
    layered = RGNetLoss(make_config(use_auxiliary_loss=True, num_decoder_layers=4))
    alone = RGNetLoss(make_config(use_auxiliary_loss=False))
    outputs, labels, video_mask = batch()
    generator = torch.Generator().manual_seed(2)
    auxiliary = [
        {"logits": torch.randn(outputs["logits"].shape, generator=generator), "pred_spans": torch.rand(4, 2, 2) * 0.5}
        for _ in range(3)
    ]
    positives = [0, 3] if batch is _cross_pairs_batch else [0, 1]
    loss, loss_dict, metrics = layered({**outputs, "auxiliary_outputs": auxiliary}, labels, video_mask)
    for layer, layer_outputs in enumerate(auxiliary):
        own = {**outputs, "pred_spans": layer_outputs["pred_spans"]}
        own["logits"] = outputs["logits"].clone()
        own["logits"][positives] = layer_outputs["logits"][positives]  # negatives keep the last layer's logits
        _, expected_dict, expected_metrics = alone(own, labels, video_mask)
        for term in ("loss_span", "loss_giou", "loss_label"):
            torch.testing.assert_close(loss_dict[f"{term}_{layer}"], expected_dict[term], msg=f"{term}_{layer}")
        torch.testing.assert_close(metrics[f"class_error_{layer}"], expected_metrics["class_error"])
    expected_total = weighted_loss_sum(loss_dict, layered.loss_weights)
    torch.testing.assert_close(loss, expected_total)


def test_weighted_loss_sum_sums_per_layer_values_under_the_term_weight():
    terms = {"loss_span": torch.tensor([1.0, 2.0, 3.0]), "loss_retrieval": torch.tensor(0.5)}
    assert weighted_loss_sum(terms, {"loss_span": 2.0, "loss_retrieval": 4.0}).item() == 2.0 * 6.0 + 4.0 * 0.5


def test_zero_weight_terms_are_not_computed():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=False, retrieval_loss_weight=0.0, giou_loss_weight=0.0))
    outputs, labels, video_mask = _paired_negative_batch()
    _, loss_dict, _ = criterion(outputs, labels, video_mask)
    assert set(loss_dict) == {"loss_span", "loss_label", "loss_saliency"}


def test_weighted_loss_sum_refuses_an_unweighted_term():
    with pytest.raises(ValueError, match="loss_typo"):
        weighted_loss_sum({"loss_span": torch.tensor(1.0), "loss_typo": torch.tensor(2.0)}, {"loss_span": 1.0})


def test_loss_is_a_plain_object_without_tensors():
    criterion = RGNetLoss(make_config())
    assert not isinstance(criterion, torch.nn.Module)
    assert not any(isinstance(value, torch.Tensor) for value in vars(criterion).values())


def test_missing_auxiliary_outputs_and_bad_video_mask_raise():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=True))
    outputs, labels, video_mask = _cross_pairs_batch()
    with pytest.raises(ValueError, match="auxiliary_outputs"):
        criterion(outputs, labels, video_mask)
    with pytest.raises(ValueError, match="video_mask"):
        RGNetLoss(make_config(use_auxiliary_loss=False))(outputs, labels, video_mask[:, :3])
    for not_a_tensor in (None, video_mask.tolist()):
        with pytest.raises(ValueError, match=r"`video_mask` must have shape \(4, \d+\) .*got (NoneType|list)"):
            RGNetLoss(make_config(use_auxiliary_loss=False))(outputs, labels, not_a_tensor)


def test_loss_gradients_reach_every_output_it_reads():
    criterion = RGNetLoss(make_config(use_auxiliary_loss=False))
    outputs, labels, video_mask = _paired_negative_batch()
    outputs = {key: value.clone().requires_grad_(True) for key, value in outputs.items()}
    loss, _, _ = criterion(outputs, labels, video_mask)
    loss.backward()
    for key, value in outputs.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, key


# ---- data-parallel normaliser ----


def _simulate_processes(monkeypatch, other_process_windows: int):
    """Pretend to be one of 2 processes whose peer holds `other_process_windows` positive windows."""

    def all_reduce(tensor, *args, **kwargs):
        tensor += other_process_windows

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)


def _cross_pairs_subset(positive_logits, positive_spans, positive_saliency, windows):
    """A cross-pairs batch over the given windows: positives on the diagonal, random filler elsewhere."""
    num_windows = len(windows)
    generator = torch.Generator().manual_seed(num_windows)
    num_pairs = num_windows * num_windows
    logits = torch.randn(num_pairs, 2, 2, generator=generator)
    pred_spans = torch.rand(num_pairs, 2, 2, generator=generator) * 0.5 + 0.1
    saliency = torch.randn(num_pairs, 4, generator=generator)
    diagonal = torch.arange(num_windows) * (num_windows + 1)
    logits[diagonal], pred_spans[diagonal], saliency[diagonal] = (
        positive_logits[windows],
        positive_spans[windows],
        positive_saliency[windows],
    )
    outputs = {
        "logits": logits,
        "pred_spans": pred_spans,
        "window_logits": torch.randn(num_pairs, 1, generator=generator),
        "saliency_scores": saliency,
    }
    return outputs, torch.ones(num_pairs, 4)


def test_data_parallel_normaliser_gives_the_global_mean_for_uneven_batches(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    positive_logits = torch.randn(4, 2, 2, generator=generator)
    positive_spans = torch.rand(4, 2, 2, generator=generator) * 0.5 + 0.1
    positive_saliency = torch.randn(4, 4, generator=generator)
    spans = torch.rand(4, 2, generator=generator) * 0.4 + 0.1
    positive_frames = torch.tensor([[0], [1], [2], [3]])
    negative_frames = torch.tensor([[3], [2], [1], [0]])

    def labels_for(windows):
        return {
            "batch_mode": "cross_pairs",
            "spans": spans[windows],
            "saliency_positive_frames": positive_frames[windows],
            "saliency_negative_frames": negative_frames[windows],
        }

    criterion = RGNetLoss(make_config(use_auxiliary_loss=False))
    terms = ("loss_span", "loss_giou", "loss_label", "loss_saliency")
    all_windows = [0, 1, 2, 3]
    global_outputs, global_video_mask = _cross_pairs_subset(
        positive_logits, positive_spans, positive_saliency, all_windows
    )
    _, global_terms, _ = criterion(global_outputs, labels_for(all_windows), global_video_mask)
    # Process 0 holds 1 window, process 1 holds 3; DDP averages their gradients (and so their losses).
    per_process = []
    for windows, other in (([0], 3), ([1, 2, 3], 1)):
        _simulate_processes(monkeypatch, other)
        outputs, video_mask = _cross_pairs_subset(positive_logits, positive_spans, positive_saliency, windows)
        per_process.append(criterion(outputs, labels_for(windows), video_mask)[1])
    for term in terms:
        averaged = (per_process[0][term] + per_process[1][term]) / 2
        torch.testing.assert_close(averaged, global_terms[term], rtol=1e-6, atol=1e-7)


def test_data_parallel_normaliser_leaves_equal_batches_unchanged(monkeypatch):
    criterion = RGNetLoss(make_config(use_auxiliary_loss=False, contrastive_temperature=0.5))
    outputs, labels, video_mask = _cross_pairs_batch()
    local_loss, local_terms, _ = criterion(outputs, labels, video_mask)
    _simulate_processes(monkeypatch, other_process_windows=2)
    distributed_loss, distributed_terms, _ = criterion(outputs, labels, video_mask)
    assert torch.equal(local_loss, distributed_loss)
    for term, value in local_terms.items():
        assert torch.equal(value, distributed_terms[term]), term


# ---- parity with the original criterion (reference fixtures) ----


def _criterion_config(fixture: dict, batch: str) -> RGNetConfig:
    spec = fixture["spec_config"][f"loss_{batch}"]
    fields = {FIXTURE_TO_CONFIG_FIELD[key]: value for key, value in spec.items() if key in FIXTURE_TO_CONFIG_FIELD}
    architecture = fixture["spec_config"]["architecture"]
    return RGNetConfig(
        num_decoder_layers=architecture["decoder_layers"],
        num_moment_queries=architecture["num_moment_queries"],
        **fields,
    )


def _group_outputs(tensors: dict, prefix: str) -> dict:
    return {
        "logits": tensors[f"{prefix}.logits"],
        "pred_spans": tensors[f"{prefix}.pred_spans"],
        "window_logits": tensors[f"{prefix}.window_logits"],
        "saliency_scores": tensors[f"{prefix}.saliency_scores"],
        "auxiliary_outputs": [
            {"logits": layer_logits, "pred_spans": layer_spans}
            for layer_logits, layer_spans in zip(
                tensors[f"{prefix}.aux_logits"], tensors[f"{prefix}.aux_pred_spans"], strict=True
            )
        ],
    }


def _paired_outputs(tensors: dict) -> dict:
    """Positive-window rows 0..B-1 followed by the negative-window rows B..2B-1."""
    positives, negatives = _group_outputs(tensors, "paired_pos"), _group_outputs(tensors, "paired_neg")
    outputs = {key: torch.cat([positives[key], negatives[key]]) for key in positives if key != "auxiliary_outputs"}
    outputs["auxiliary_outputs"] = [
        {key: torch.cat([positive_layer[key], negative_layer[key]]) for key in positive_layer}
        for positive_layer, negative_layer in zip(
            positives["auxiliary_outputs"], negatives["auxiliary_outputs"], strict=True
        )
    ]
    return outputs


def _load_case(fixtures_dir, name: str, case: str):
    """(criterion, outputs, labels, video_mask, reference tensors, reference prefix, batch) of one fixture case."""
    fixture = json.loads((fixtures_dir / f"{name}.json").read_text())
    inputs = load_file(fixtures_dir / f"{name}.inputs.safetensors")
    if case == "train":
        path = fixtures_dir / f"{name}.train_mode.safetensors"
        with safe_open(path, "pt") as handle:
            keys = set(handle.keys())
        reference_prefix = "train_cross" if "train_cross.loss.total" in keys else "train_paired"
        batch = "cross_pairs" if reference_prefix == "train_cross" else "paired_negative"
    else:
        path = fixtures_dir / f"{name}.outputs.safetensors"
        reference_prefix = "cross" if case == "cross" else "paired"
        batch = "cross_pairs" if case == "cross" else "paired_negative"
    tensors = load_file(path)
    if batch == "cross_pairs":
        outputs, video_mask = _group_outputs(tensors, "cross"), inputs["cross.video_mask"]
    else:
        outputs = _paired_outputs(tensors)
        video_mask = torch.cat([inputs["positives.video_mask"], inputs["negatives.video_mask"]])
    labels = {
        "batch_mode": batch,
        "spans": inputs["targets.spans"],
        "saliency_positive_frames": inputs["targets.saliency_pos_labels"],
        "saliency_negative_frames": inputs["targets.saliency_neg_labels"],
    }
    return (
        fixture,
        RGNetLoss(_criterion_config(fixture, batch)),
        outputs,
        labels,
        video_mask,
        tensors,
        reference_prefix,
    )


@pytest.mark.parametrize("case", ["cross", "paired", "train"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_loss_matches_the_original_criterion(original_fixtures_dir, name, case):
    fixture, criterion, outputs, labels, video_mask, reference, prefix = _load_case(original_fixtures_dir, name, case)
    loss, loss_dict, metrics = criterion(outputs, labels, video_mask)

    loss_prefix = f"{prefix}.loss."
    reference_terms = {
        key[len(loss_prefix) :]: value for key, value in reference.items() if key.startswith(loss_prefix)
    }
    expected_loss_names = {term for term in reference_terms if term.startswith("loss_")}
    assert set(loss_dict) == expected_loss_names
    assert set(metrics) == {term for term in reference_terms if term.startswith("class_error")}
    for term, value in loss_dict.items():
        torch.testing.assert_close(value.reshape(1), reference_terms[term], rtol=1e-5, atol=1e-5, msg=term)
    for term, value in metrics.items():
        torch.testing.assert_close(value.reshape(1), reference_terms[term], rtol=1e-5, atol=1e-5, msg=term)
    torch.testing.assert_close(loss.reshape(1), reference_terms["total"], rtol=0, atol=5e-5)

    batch = labels["batch_mode"]
    for term in loss_dict:
        assert criterion.loss_weights[term] == fixture["weight_dicts"][batch][term], term
    assert torch.equal(criterion.matched_slots(outputs, labels), reference[f"{prefix}.matched_slots"])


def test_ego4d_finetune_criterion_has_no_retrieval_term(original_fixtures_dir):
    _, criterion, outputs, labels, video_mask, _, _ = _load_case(original_fixtures_dir, "rgnet_tiny_ego4d", "paired")
    assert criterion.loss_weights["loss_retrieval"] == 0.0
    assert "loss_retrieval" not in criterion(outputs, labels, video_mask)[1]


def test_config_fields_name_every_field_the_loss_reads():
    """`RGNetForVideoGrounding.criterion` rebuilds the loss when one of `RGNetLoss.config_fields` changes on the
    config: a field read but not listed would keep its value from when the model was built."""

    class RecordingConfig:
        def __init__(self, config):
            self.config, self.read = config, set()

        def __getattr__(self, name):
            self.read.add(name)
            return getattr(self.config, name)

    recording = RecordingConfig(make_config())
    RGNetLoss(recording)
    assert recording.read == set(RGNetLoss.config_fields)


@pytest.mark.parametrize("pair_mode", ["cross_pairs", "paired_negative"])
@pytest.mark.parametrize(
    "zero_weights",
    [
        {},
        {"label_loss_weight": 0.0},
        {"saliency_loss_weight": 0.0},
        {"retrieval_loss_weight": 0.0},
        {"span_l1_loss_weight": 0.0},
        {"span_l1_loss_weight": 0.0, "giou_loss_weight": 0.0},
        {"label_loss_weight": 0.0, "retrieval_loss_weight": 0.0},
    ],
)
def test_heads_without_gradient_are_the_ones_a_training_step_leaves_without(pair_mode, zero_weights):
    """What `RGNetTrainer` tells DDP (`ddp_find_unused_parameters`): a missed head fails a multi-GPU run."""
    tester = RGNetModelTester()
    config = tester.get_config(pair_mode=pair_mode, **zero_weights)
    model = RGNetForVideoGrounding(config).train()
    inputs = tester.cross_pairs_batch(2) if pair_mode == "cross_pairs" else tester.prepare_inputs(4)
    model(**inputs, labels=tester.prepare_labels(pair_mode, inputs)).loss.backward()
    without_gradient = {name for name, parameter in model.named_parameters() if parameter.grad is None}
    predicted = RGNetLoss.heads_without_gradient(config)
    assert without_gradient == {
        name for name, _ in model.named_parameters() if any(name.startswith(f"{head}.") for head in predicted)
    }
