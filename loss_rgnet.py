"""RGNet training objective: span geometry, Hungarian matching and the weighted loss (spec §6.3-6.4).

Contents, in reading order:

1. Span geometry as pure functions: `span_cxw_to_xx`, `span_xx_to_cxw`, `temporal_iou`,
   `generalized_temporal_iou`.
2. `RGNetHungarianMatcher` (spec §6.3): one matched moment slot per positive window.
3. `RGNetLabels` and `validate_labels`: the documented label mapping and its entry check.
4. `weighted_loss_sum`: the one place where the weighted total is formed.
5. `RGNetLoss` (spec §6.4): one method per term, built once by the model, no parameters or buffers.

Symbols used in every shape below: `N` (query, window) pairs in the forward batch, `B` positive windows
(= queries), `Q` moment slots per window, `Lv` frames per window, `K` saliency (positive, negative) frame
pairs per window, `L` decoder layers. Spans are `(center, width)` ("cxw") or `(start, end)` ("xx") in units of
the window's valid length; class index 0 is foreground, 1 background; masks are 1 = valid.

Batch layouts (spec §6.2), named by `labels["batch_mode"]`:

* `"cross_pairs"`: `N = B²`, pair `p = i·B + j` is query `i` with the positive window of query `j`; the
  positives are the diagonal `p = i·B + i`; every pair enters the retrieval InfoNCE.
* `"paired_negative"`: `N = 2B`, rows `0..B-1` are query `b` with its positive window and rows `B..2B-1` the
  same queries, in the same order, with one negative window each.

Data parallel: every term is a mean over positive windows (times a fixed number of coordinates, slots or frame
pairs per window). The window count used as divisor is summed over processes and divided by the world size
(clamped at 1), as transformers' DETR loss does with its box count. DDP then averages gradients over processes,
so each step optimises the mean over all windows of all processes even when per-process batches differ in
size; with equal per-process batches the divisor is exactly the local count and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers.utils import logging

try:
    from .configuration_rgnet import PAIR_MODES, RGNetConfig
except ImportError:
    from configuration_rgnet import PAIR_MODES, RGNetConfig

logger = logging.get_logger(__name__)

FOREGROUND_CLASS = 0
BACKGROUND_CLASS = 1
# Finite stand-in for NaN/inf matching costs: a slot whose cost cannot be computed should only be matched when no
# other slot is left (and an assignment solver such as scipy's rejects non-finite matrices).
_INVALID_MATCHING_COST = 1e8


# ---- Span geometry (spec §6.3) ----


def _check_spans(spans: torch.Tensor, name: str) -> None:
    if not isinstance(spans, torch.Tensor) or spans.ndim < 1 or spans.shape[-1] != 2:
        shape = tuple(spans.shape) if isinstance(spans, torch.Tensor) else type(spans).__name__
        raise ValueError(f"`{name}` must be a tensor of spans with a last dimension of 2, got {shape}.")


def span_cxw_to_xx(spans: torch.Tensor) -> torch.Tensor:
    """Convert `(center, width)` spans to `(start, end)`.

    Args:
        spans (`torch.Tensor` of shape `(..., 2)`): `(center, width)` spans.

    Returns:
        `torch.Tensor` of shape `(..., 2)`: `(center - width/2, center + width/2)`.
    """
    _check_spans(spans, "spans")
    center, width = spans.unbind(-1)
    return torch.stack([center - 0.5 * width, center + 0.5 * width], dim=-1)


def span_xx_to_cxw(spans: torch.Tensor) -> torch.Tensor:
    """Convert `(start, end)` spans to `(center, width)`.

    Args:
        spans (`torch.Tensor` of shape `(..., 2)`): `(start, end)` spans.

    Returns:
        `torch.Tensor` of shape `(..., 2)`: `((start + end)/2, end - start)`.
    """
    _check_spans(spans, "spans")
    start, end = spans.unbind(-1)
    return torch.stack([(start + end) * 0.5, end - start], dim=-1)


def _pairwise_span_extents(
    spans1: torch.Tensor, spans2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union and hull lengths of every span pair; raises on spans with `end < start`.

    NaN spans are let through (a NaN comparison is false) so that callers such as the matcher can handle
    non-finite predictions themselves.
    """
    for name, spans in (("spans1", spans1), ("spans2", spans2)):
        _check_spans(spans, name)
        if spans.ndim < 2:
            raise ValueError(f"`{name}` must have shape (..., num_spans, 2), got {tuple(spans.shape)}.")
        if (spans[..., 1] < spans[..., 0]).any():
            raise ValueError(f"`{name}` holds malformed spans: every span must be (start, end) with end >= start.")
    start1, end1 = spans1[..., :, None, 0], spans1[..., :, None, 1]  # (..., N, 1)
    start2, end2 = spans2[..., None, :, 0], spans2[..., None, :, 1]  # (..., 1, M)
    intersection = (torch.minimum(end1, end2) - torch.maximum(start1, start2)).clamp(min=0)
    union = (end1 - start1) + (end2 - start2) - intersection
    hull = torch.maximum(end1, end2) - torch.minimum(start1, start2)
    return intersection, union, hull


def temporal_iou(spans1: torch.Tensor, spans2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise temporal IoU of two sets of `(start, end)` spans.

    Leading dimensions, if any, are batch dimensions shared by both inputs. Two zero-length spans give a zero
    union and a NaN IoU (no epsilon, as in the original implementation).

    Args:
        spans1 (`torch.Tensor` of shape `(..., N, 2)`): `(start, end)` spans with `end >= start`.
        spans2 (`torch.Tensor` of shape `(..., M, 2)`): `(start, end)` spans with `end >= start`.

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`: `iou` and `union`, each of shape `(..., N, M)`.

    Raises:
        ValueError: if a span has `end < start` or the inputs are not `(..., num_spans, 2)`.
    """
    intersection, union, _ = _pairwise_span_extents(spans1, spans2)
    return intersection / union, union


def generalized_temporal_iou(spans1: torch.Tensor, spans2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised temporal IoU `IoU - (hull - union) / hull`, with `hull = max(e) - min(s)` (spec §6.3).

    Args:
        spans1 (`torch.Tensor` of shape `(..., N, 2)`): `(start, end)` spans with `end >= start`.
        spans2 (`torch.Tensor` of shape `(..., M, 2)`): `(start, end)` spans with `end >= start`.

    Returns:
        `torch.Tensor` of shape `(..., N, M)`: values in `[-1, 1]`.

    Raises:
        ValueError: if a span has `end < start` or the inputs are not `(..., num_spans, 2)`.
    """
    intersection, union, hull = _pairwise_span_extents(spans1, spans2)
    return intersection / union - (hull - union) / hull


# ---- Hungarian matching (spec §6.3) ----


class RGNetHungarianMatcher:
    """Assign one of the `Q` moment slots of each positive window to the window's target (spec §6.3).

    The cost of slot `q` for target `t` is
    `matcher_span_l1_cost · L1(cxw_q, cxw_t) − matcher_giou_cost · GIoU(xx_q, xx_t)
    − matcher_class_cost · p_fg(q)`,
    with `p_fg` the softmax foreground probability. Same construction as DETR's matcher; differs: 1-D spans, and
    each window is its own assignment problem (targets never compete across windows).

    The cost is computed for all windows (and all decoder layers, given stacked `(L, B, Q, 2)` outputs) at once, on
    the outputs' device. Each window has one target (`T = 1`), and the optimal assignment of one target among `Q`
    slots is the cheapest slot: the Hungarian solution is then an argmin over slots (the lowest slot on ties, as
    `scipy.optimize.linear_sum_assignment` gives; `tests/test_loss_rgnet.py` checks the two agree). No host copy and
    no loop over windows.

    Args:
        config ([`RGNetConfig`]): reads `matcher_span_l1_cost`, `matcher_giou_cost`, `matcher_class_cost`.

    Raises:
        ValueError: if all three costs are zero.
    """

    def __init__(self, config: RGNetConfig):
        self.span_l1_cost = float(config.matcher_span_l1_cost)
        self.giou_cost = float(config.matcher_giou_cost)
        self.class_cost = float(config.matcher_class_cost)
        if self.span_l1_cost == 0 and self.giou_cost == 0 and self.class_cost == 0:
            raise ValueError("`config` has all matcher costs (`matcher_*_cost`) equal to 0; nothing to match on.")

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, pred_spans: torch.Tensor, target_spans: torch.Tensor) -> torch.Tensor:
        """Matching cost of every (slot, target) pair of every window, non-finite entries made finite.

        Args:
            logits (`torch.Tensor` of shape `(..., B, Q, 2)`): class logits of the positive windows (leading
                dimensions, e.g. decoder layers, are batch dimensions).
            pred_spans (`torch.Tensor` of shape `(..., B, Q, 2)`): predicted `(center, width)` spans.
            target_spans (`torch.Tensor` of shape `(B, T, 2)`): target `(center, width)` spans.

        Returns:
            `torch.Tensor` of shape `(..., B, Q, T)`: NaN and `+inf` replaced by a large cost, `-inf` by its negative.
        """
        foreground_probability = logits.softmax(-1)[..., FOREGROUND_CLASS]  # (..., B, Q)
        span_l1 = (pred_spans[..., :, None, :] - target_spans[:, None, :, :]).abs().sum(-1)  # (..., B, Q, T)
        giou = generalized_temporal_iou(span_cxw_to_xx(pred_spans), span_cxw_to_xx(target_spans))  # (..., B, Q, T)
        cost = (
            self.span_l1_cost * span_l1 - self.giou_cost * giou - self.class_cost * foreground_probability[..., None]
        )
        return torch.nan_to_num(
            cost, nan=_INVALID_MATCHING_COST, posinf=_INVALID_MATCHING_COST, neginf=-_INVALID_MATCHING_COST
        )

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, pred_spans: torch.Tensor, target_spans: torch.Tensor) -> torch.Tensor:
        """Matched slot of each positive window (of each decoder layer, given stacked outputs).

        Args:
            logits (`torch.Tensor` of shape `(B, Q, 2)` or `(L, B, Q, 2)`): class logits of the positive windows.
            pred_spans (`torch.Tensor` of the shape of `logits`): predicted `(center, width)` spans.
            target_spans (`torch.Tensor` of shape `(B, 2)`): the one target `(center, width)` of each window.

        Returns:
            `torch.LongTensor` of shape `(B,)` or `(L, B)` on the device of `logits`: the slot assigned to each target.
        """
        if logits.ndim not in (3, 4) or pred_spans.shape != logits.shape or logits.shape[-1] != 2:
            raise ValueError(
                f"`logits` and `pred_spans` must both have shape (B, Q, 2) or (L, B, Q, 2), got "
                f"{tuple(logits.shape)} and {tuple(pred_spans.shape)}."
            )
        if target_spans.shape != (logits.shape[-3], 2):
            raise ValueError(
                f"`target_spans` must have shape ({logits.shape[-3]}, 2), got {tuple(target_spans.shape)}."
            )
        cost = self.cost_matrix(logits, pred_spans, target_spans[:, None, :])  # (..., B, Q, 1)
        return cost[..., 0].argmin(dim=-1)


def _at_least_float32(value: torch.Tensor) -> torch.Tensor:
    return value.to(torch.promote_types(value.dtype, torch.float32))


def _float32_outputs(outputs: Mapping) -> dict:
    """The outputs the loss reads, in float32 or wider: under bf16 autocast the InfoNCE at temperature 0.07, the
    saliency sums and the matching costs would otherwise lose precision (the gradient still flows back to bf16);
    a float64 model keeps float64."""
    keys = ("logits", "pred_spans", "window_logits", "saliency_scores")
    converted = {key: _at_least_float32(outputs[key]) for key in keys}
    auxiliary_outputs = outputs.get("auxiliary_outputs")
    if isinstance(auxiliary_outputs, Sequence):
        auxiliary_outputs = [
            {key: _at_least_float32(value) for key, value in layer.items()} for layer in auxiliary_outputs
        ]
    converted["auxiliary_outputs"] = auxiliary_outputs
    converted["grounding_pair_index"] = outputs.get("grounding_pair_index")
    return converted


# ---- Labels ----


class RGNetLabels(TypedDict):
    """Training targets of one batch, one entry per positive window (= query), in query order.

    Attributes:
        batch_mode (`str`): `"cross_pairs"` or `"paired_negative"`; fixes which rows of the outputs are the
            positive (and negative) windows (see the module docstring).
        spans (`torch.FloatTensor` of shape `(B, 2)`): target `(center, width)` in units of the positive window's
            valid length, `width >= 0`, inside the window: `0 <= center - width/2` and `center + width/2 <= 1`.
        saliency_positive_frames (`torch.LongTensor` of shape `(B, K)`): frame indices inside the target moment,
            relative to the window start; valid (unpadded) frames of the window.
        saliency_negative_frames (`torch.LongTensor` of shape `(B, K)`): frame indices of the same window outside
            the target moment, relative to the window start; pair `k` differs from positive frame `k` except at
            frame 0, the stand-in when the target covers the whole window (spec §6.1 step 6).
    """

    batch_mode: Literal["cross_pairs", "paired_negative"]
    spans: torch.Tensor
    saliency_positive_frames: torch.Tensor
    saliency_negative_frames: torch.Tensor


_LABEL_KEYS = tuple(RGNetLabels.__annotations__)
# Slack on the span bounds `0 <= center ± width/2 <= 1`: real targets (`window_target_spans`) are float32, so a
# target that touches a window edge can land a rounding error past it (the reference fixtures reach 1 − 3e-8). Far
# below any real mistake ((start, end) pairs, seconds or frames are off by whole percents or more).
_SPAN_BOUND_TOLERANCE = 1e-4


@torch.compiler.disable  # reads values (a host sync): eager under `torch.compile`, before the compiled graph
def validate_labels(
    labels: Mapping, num_pairs: int, *, num_frames: int | None = None, video_mask: torch.Tensor | None = None
) -> None:
    """Check an [`RGNetLabels`] mapping against the forward batch it supervises.

    Args:
        labels (`RGNetLabels`): the targets.
        num_pairs (`int`): `N`, the number of (query, window) pairs in the forward batch.
        num_frames (`int`, *optional*): `Lv`; when given, saliency frame indices must lie in `[0, Lv)`.
        video_mask (`torch.Tensor` of shape `(N, Lv)`, *optional*): valid frames of every pair, 1 (or True) =
            valid; when given, saliency frame indices must point at valid frames of their positive window (not
            merely lie in `[0, Lv)`), and `num_frames` defaults to `Lv`.

    Raises:
        ValueError: naming the offending key: a missing or unknown key, an unknown batch mode, a wrong shape or
            dtype, a non-finite or negative-width span, a span reaching outside its window, a frame index out of
            range or on a padded frame, a saliency pair whose two frames coincide (other than at frame 0), a
            `video_mask` of the wrong shape, or `num_pairs` other than `B²` (`"cross_pairs"`) or `2B`
            (`"paired_negative"`).
    """
    if not isinstance(labels, Mapping):
        raise ValueError(f"`labels` must be a mapping with keys {_LABEL_KEYS}, got {type(labels).__name__}.")
    # Before the missing-key check: a misspelt key ('span') would otherwise only be reported as 'spans' missing.
    unknown = [key for key in labels if key not in _LABEL_KEYS]
    if unknown:
        missing = [key for key in _LABEL_KEYS if key not in labels]
        hint = f" ({missing} missing: misspelt?)" if missing else ""
        raise ValueError(f"`labels` has unknown key(s) {unknown}{hint}; the accepted keys are {_LABEL_KEYS}.")
    for key in _LABEL_KEYS:
        if key not in labels:
            raise ValueError(f"`labels` is missing the key {key!r} (expected keys: {_LABEL_KEYS}).")
    batch_mode = labels["batch_mode"]
    if batch_mode not in PAIR_MODES:
        raise ValueError(f"Unknown `labels['batch_mode']` {batch_mode!r}; expected one of {PAIR_MODES}.")

    spans = labels["spans"]
    if not isinstance(spans, torch.Tensor) or spans.ndim != 2 or spans.shape[1] != 2 or spans.shape[0] < 1:
        shape = tuple(spans.shape) if isinstance(spans, torch.Tensor) else type(spans).__name__
        raise ValueError(f"`labels['spans']` must be a tensor of shape (B, 2) with B >= 1, got {shape}.")
    if not spans.is_floating_point():
        raise ValueError(f"`labels['spans']` must be a floating-point tensor, got {spans.dtype}.")
    num_windows = spans.shape[0]
    if video_mask is not None:
        if (
            not isinstance(video_mask, torch.Tensor)
            or video_mask.ndim != 2
            or video_mask.shape[0] != num_pairs
            or (num_frames is not None and video_mask.shape[1] != num_frames)
        ):
            shape = tuple(video_mask.shape) if isinstance(video_mask, torch.Tensor) else type(video_mask).__name__
            expected = f"({num_pairs}, {'Lv' if num_frames is None else num_frames})"
            raise ValueError(f"`video_mask` must be a tensor of shape {expected} (pairs, frames), got {shape}.")
        num_frames = video_mask.shape[1]
    frame_labels = {key: labels[key] for key in ("saliency_positive_frames", "saliency_negative_frames")}
    for key, frames in frame_labels.items():
        if not isinstance(frames, torch.Tensor) or frames.ndim != 2 or frames.shape[0] != num_windows:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"`labels[{key!r}]` must be a tensor of shape ({num_windows}, K), got {shape}.")
        if frames.shape[1] < 1:
            raise ValueError(f"`labels[{key!r}]` must hold at least one frame per window (K >= 1).")
        if frames.dtype != torch.int64:
            raise ValueError(f"`labels[{key!r}]` must be int64, got {frames.dtype}.")
    positive_frames, negative_frames = frame_labels.values()
    if positive_frames.shape != negative_frames.shape:
        raise ValueError(
            "`labels['saliency_negative_frames']` must have the shape of `labels['saliency_positive_frames']` "
            f"{tuple(positive_frames.shape)}, got {tuple(negative_frames.shape)}."
        )
    expected_pairs = num_windows * num_windows if batch_mode == "cross_pairs" else 2 * num_windows
    if num_pairs != expected_pairs:
        rule = "B*B" if batch_mode == "cross_pairs" else "2*B"
        raise ValueError(
            f"`labels['batch_mode']` is {batch_mode!r} with B = {num_windows} windows in `labels['spans']`, so the "
            f"batch must hold {rule} = {expected_pairs} pairs, got {num_pairs}."
        )

    # The value checks: flags computed where the labels are and read on the host at once (each read waits for the
    # device), then the first failing check is described.
    span_bounds = span_cxw_to_xx(spans)  # (B, 2) start, end
    # Half-precision labels round by more than the float32 slack.
    tolerance = max(_SPAN_BOUND_TOLERANCE, torch.finfo(spans.dtype).eps)
    outside_window = (span_bounds[:, 0] < -tolerance) | (span_bounds[:, 1] > 1 + tolerance)  # (B,)
    out_of_range = {
        key: (frames < 0) | (frames >= num_frames) if num_frames is not None else frames < 0
        for key, frames in frame_labels.items()
    }
    # A pair ranking a frame against itself is a constant margin with no gradient. The sampler (spec §6.1 step 6)
    # makes one only when the target covers the whole window (the negative is then frame 0 by convention), so a
    # coincidence anywhere else is a mistake, e.g. the same tensor under both keys.
    same_frame = (positive_frames == negative_frames) & (negative_frames != 0)  # (B, K)
    on_padding = {}
    if video_mask is not None:
        # Windows are padded to `Lv`: an index into the padding passes the `[0, Lv)` check but reads a score that
        # belongs to no frame, so each index is checked against its own positive window's valid frames.
        positive_mask = video_mask[_positive_rows(batch_mode, num_windows, video_mask.device)] != 0  # (B, Lv)
        for key, frames in frame_labels.items():
            in_range = frames.to(video_mask.device).clamp(0, num_frames - 1)  # out-of-range ones are reported above
            on_padding[key] = ~positive_mask.gather(1, in_range)  # (B, K)
    flags = [
        ~torch.isfinite(spans).all() | (spans[:, 1] < 0).any(),
        outside_window.any(),
        *(flag.any() for flag in out_of_range.values()),
        same_frame.any(),
        *(flag.any() for flag in on_padding.values()),
    ]
    flags = torch.stack([flag.to(spans.device) for flag in flags]).tolist()
    bad_spans, span_outside, *frame_flags = flags
    if bad_spans:
        raise ValueError("`labels['spans']` must hold finite (center, width) spans with width >= 0.")
    if span_outside:
        window = int(outside_window.nonzero()[0, 0])
        (center, width), (start, end) = spans[window].tolist(), span_bounds[window].tolist()
        raise ValueError(
            "`labels['spans']` must hold (center, width) spans in units of the positive window's valid length, "
            f"inside the window: 0 <= center - width/2 and center + width/2 <= 1 (up to {tolerance:g}); window "
            f"{window} has (center, width) = ({center:.6g}, {width:.6g}), i.e. [{start:.6g}, {end:.6g}]. Were "
            "(start, end) pairs, or seconds or frames, passed instead of (center, width) fractions of the window?"
        )
    for key, flag in zip(out_of_range, frame_flags[:2], strict=True):
        if flag:
            raise ValueError(f"`labels[{key!r}]` holds a frame index outside [0, {num_frames}).")
    if frame_flags[2]:
        window, pair = same_frame.nonzero()[0].tolist()
        raise ValueError(
            f"`labels['saliency_negative_frames']` must differ from `labels['saliency_positive_frames']` pair by "
            f"pair (frame 0 excepted, the stand-in when the target covers the whole window); window {window}, "
            f"pair {pair} has frame {int(negative_frames[window, pair])} in both (the same tensor under both keys?)."
        )
    for key, flag in zip(on_padding, frame_flags[3:], strict=True):
        if flag:
            window, pair = on_padding[key].nonzero()[0].tolist()
            raise ValueError(
                f"`labels[{key!r}]` must index valid (unpadded) frames of each positive window; window {window} "
                f"has {int(positive_mask[window].sum())} valid frames of {num_frames} (`video_mask`), but pair "
                f"{pair} holds frame {int(labels[key][window, pair])}."
            )


def _positive_rows(batch_mode: str, num_windows: int, device: torch.device) -> torch.Tensor:
    """Row of each positive window in the forward batch: the diagonal `i·B + i`, or the first `B` rows."""
    window_index = torch.arange(num_windows, device=device)
    return window_index * (num_windows + 1) if batch_mode == "cross_pairs" else window_index


def _grounded_rows(pair_rows: torch.Tensor, grounding_pair_index: torch.Tensor | None, num_pairs: int) -> torch.Tensor:
    """Rows of the per-pair moment outputs (`logits`, `pred_spans`, `saliency_scores`) that hold the pairs `pair_rows`.

    The identity when every pair was grounded (`grounding_pair_index` is `None`); otherwise the position of each pair
    in `outputs["grounding_pair_index"]` (see `RGNetForVideoGrounding.forward`).
    """
    if grounding_pair_index is None:
        return pair_rows
    grounding_pair_index = grounding_pair_index.to(pair_rows.device)
    lookup = torch.full((num_pairs,), -1, dtype=torch.long, device=pair_rows.device)
    lookup[grounding_pair_index] = torch.arange(len(grounding_pair_index), device=pair_rows.device)
    rows = lookup[pair_rows]
    if (rows < 0).any():
        missing = pair_rows[rows < 0].tolist()
        raise ValueError(f"`outputs['grounding_pair_index']` lacks the pair(s) {missing} that the loss reads.")
    return rows


def _windows_per_process(num_windows: int, device: torch.device) -> float:
    """Positive-window count to divide by: the mean over processes under `torch.distributed`, clamped at 1.

    Every process divides its local sum by the global count / world size; DDP's gradient averaging (a further
    division by the world size) then yields sum over all windows / global count, the global mean, even when
    per-process batches differ. Equal per-process batches give exactly the local count.
    """
    count = torch.tensor(float(num_windows), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(count.item(), 1.0)


# ---- Weighted total ----


def weighted_loss_sum(loss_dict: Mapping[str, torch.Tensor], loss_weights: Mapping[str, float]) -> torch.Tensor:
    """Total loss `Σ weight[term] · value[term]` over every term of `loss_dict`, in its order.

    A term may hold one value per decoder layer (shape `(L,)`, layers sharing the term's weight): its values are
    summed first.

    Args:
        loss_dict (`Mapping[str, torch.Tensor]`): unweighted terms, 0-d or `(L,)`.
        loss_weights (`Mapping[str, float]`): the weight of every term.

    Returns:
        `torch.Tensor`: 0-d total.

    Raises:
        ValueError: if `loss_dict` is empty or holds a term that `loss_weights` does not weight (a term must never
            drop out of the total silently).
    """
    unweighted = [name for name in loss_dict if name not in loss_weights]
    if unweighted:
        raise ValueError(f"`loss_weights` has no weight for the term(s) {unweighted} of `loss_dict`.")
    if not loss_dict:
        raise ValueError("`loss_dict` is empty: every loss weight is 0.")
    return sum(loss_weights[name] * (value.sum() if value.ndim else value) for name, value in loss_dict.items())


# ---- Loss (spec §6.4) ----


class RGNetLoss:
    """RGNet training loss: matched span L1 and GIoU, slot labels, saliency ranking and window retrieval.

    Built once (by `RGNetForVideoGrounding.__init__`) as a plain object: it holds no parameters and no buffers,
    so the model's state dict is exactly its architecture; class weights are made per call on the logits' device.
    Follows the set-prediction losses of DETR / Moment-DETR; differs: one target per window, a plain mean of the
    label cross-entropy over slots, negative-window saliency terms (QD-DETR) and a window retrieval term.

    Terms (unweighted, original names; spec §6.4), each a mean over the `B` positive windows:

    * `loss_span`: L1 between the matched slot's `(center, width)` and the target, mean over `B×2` coordinates.
    * `loss_giou`: `1 − GIoU` of the matched slot, mean over `B`.
    * `loss_label`: per-slot weighted cross-entropy (foreground weight 1, background `background_class_weight`),
      matched slot foreground, every other slot background, plain mean over the slots. In `"paired_negative"`
      batches the negative windows' slots are appended as background (mean over `B×2Q` slots).
    * `loss_saliency`: `(2/(B·K)) Σ max(0, margin + s[t⁻] − s[t⁺])` on the positive windows; in
      `"paired_negative"` batches plus `(2/(B·K)) Σ max(0, margin + max_t s_neg[t] − s[t⁺])` and
      `(1/B) Σ_b Σ_{t valid} −log(1 − σ(s_neg_b[t]))`.
    * `loss_retrieval`: `"cross_pairs"`: symmetric InfoNCE over `Z[i, j] = ρ(pair i·B + j) / temperature`;
      `"paired_negative"`: `(2/B) Σ max(0, retrieval_margin + ρ_neg − ρ_pos)` on the raw logits.
    * `loss_span_{l}`, `loss_giou_{l}`, `loss_label_{l}` for decoder layers `l = 0..L−2` (matched independently)
      when `use_auxiliary_loss`. All layers are matched and scored together on their stacked `(L, B, Q, 2)` outputs:
      one matching cost and one host copy per step, and one kernel per operation for all layers (a training step
      on a GPU is bound by kernel launches; at the MAD preset the loss dispatches 265 operators instead of 1,155).

    A term whose weight is 0 is not computed (e.g. `loss_retrieval` in Ego4D finetuning). Logging-only metrics:
    `class_error` and `class_error_{l}` = 100 × fraction of matched slots whose argmax class is not foreground.

    Args:
        config ([`RGNetConfig`]): the loss, matching and decoder-depth fields.
    """

    # Every config field the loss and its matcher read.
    config_fields = (
        "matcher_span_l1_cost",
        "matcher_giou_cost",
        "matcher_class_cost",
        "background_class_weight",
        "saliency_margin",
        "retrieval_margin",
        "contrastive_temperature",
        "use_auxiliary_loss",
        "num_decoder_layers",
        "span_l1_loss_weight",
        "giou_loss_weight",
        "label_loss_weight",
        "saliency_loss_weight",
        "retrieval_loss_weight",
    )

    def __init__(self, config: RGNetConfig):
        self.matcher = RGNetHungarianMatcher(config)
        self.background_class_weight = float(config.background_class_weight)
        self.saliency_margin = float(config.saliency_margin)
        self.retrieval_margin = float(config.retrieval_margin)
        self.contrastive_temperature = float(config.contrastive_temperature)
        self.use_auxiliary_loss = bool(config.use_auxiliary_loss)
        self.num_decoder_layers = int(config.num_decoder_layers)
        # The explicit term -> weight mapping read by the total; covers every term `__call__` can produce.
        final_layer_weights = {
            "loss_span": float(config.span_l1_loss_weight),
            "loss_giou": float(config.giou_loss_weight),
            "loss_label": float(config.label_loss_weight),
            "loss_saliency": float(config.saliency_loss_weight),
            "loss_retrieval": float(config.retrieval_loss_weight),
        }
        self.loss_weights: dict[str, float] = dict(final_layer_weights)
        if self.use_auxiliary_loss:
            for layer in range(self.num_decoder_layers - 1):
                for term in ("loss_span", "loss_giou", "loss_label"):
                    self.loss_weights[f"{term}_{layer}"] = final_layer_weights[term]

    @staticmethod
    def heads_without_gradient(config: RGNetConfig) -> tuple[str, ...]:
        """The modules of [`RGNetForVideoGrounding`] (name prefixes of its parameters) that no loss term reaches with
        `config`'s weights, since a term of weight 0 is not computed: e.g. `("retrieval_head",)` in Ego4D
        finetuning. DDP must then look for unused parameters (`RGNetTrainer` sets `ddp_find_unused_parameters`)."""
        unused = []
        if config.label_loss_weight == 0:
            unused.append("class_head")
        if config.saliency_loss_weight == 0:
            unused += ["saliency_frame_proj", "saliency_global_proj"]
        if config.retrieval_loss_weight == 0:
            unused.append("retrieval_head")
        if config.span_l1_loss_weight == 0 and config.giou_loss_weight == 0:
            # Only the span terms read the spans, and each layer's anchors reach the next layer detached.
            unused += ["span_head", "model.decoder.anchor_update_heads"]
        return tuple(unused)

    # ---- one method per term ----

    def loss_span(self, matched_spans: torch.Tensor, target_spans: torch.Tensor, num_windows: float) -> torch.Tensor:
        """L1 loss of matched spans.

        Args:
            matched_spans (`torch.Tensor` of shape `(B, 2)` or `(L, B, 2)`): `(center, width)` of each window's
                matched slot (of each decoder layer).
            target_spans (`torch.Tensor` of shape `(B, 2)`): target `(center, width)`.
            num_windows (`float`): window count to divide by (see `_windows_per_process`).

        Returns:
            `torch.Tensor` of shape `()` or `(L,)`: mean over the `B×2` coordinates.
        """
        return (matched_spans - target_spans).abs().sum(dim=(-2, -1)) / (num_windows * 2)

    def loss_giou(self, matched_spans: torch.Tensor, target_spans: torch.Tensor, num_windows: float) -> torch.Tensor:
        """`1 − GIoU` of matched spans.

        Args:
            matched_spans (`torch.Tensor` of shape `(B, 2)` or `(L, B, 2)`): `(center, width)` of each window's
                matched slot (of each decoder layer).
            target_spans (`torch.Tensor` of shape `(B, 2)`): target `(center, width)`.
            num_windows (`float`): window count to divide by.

        Returns:
            `torch.Tensor` of shape `()` or `(L,)`: mean over `B`.
        """
        # Each window against its own target: a batch of 1×1 pairwise problems, (..., B, 1, 2) -> (..., B, 1, 1).
        giou = generalized_temporal_iou(
            span_cxw_to_xx(matched_spans)[..., None, :], span_cxw_to_xx(target_spans)[:, None]
        )
        return (1 - giou).sum(dim=(-3, -2, -1)) / num_windows

    def loss_label(
        self,
        positive_logits: torch.Tensor,
        matched_slots: torch.Tensor,
        negative_logits: torch.Tensor | None,
        num_windows: float,
    ) -> torch.Tensor:
        """Foreground/background cross-entropy over all slots, plain mean (not divided by the sum of weights).

        Args:
            positive_logits (`torch.Tensor` of shape `(B, Q, 2)` or `(L, B, Q, 2)`): class logits of the positive
                windows (of each decoder layer).
            matched_slots (`torch.LongTensor` of shape `(B,)` or `(L, B)`): the foreground slot of each positive window.
            negative_logits (`torch.Tensor` of shape `(B, Q, 2)`, *optional*): class logits of the negative windows
                (`"paired_negative"`), all background; the same for every layer.
            num_windows (`float`): window count to divide by.

        Returns:
            `torch.Tensor` of shape `()` or `(L,)`: mean over the `B×Q` (or `B×2Q`) slots.
        """
        leading, num_slots = positive_logits.shape[:-3], positive_logits.shape[-2]
        target_classes = torch.full(
            positive_logits.shape[:-1], BACKGROUND_CLASS, dtype=torch.long, device=positive_logits.device
        ).scatter_(-1, matched_slots[..., None], FOREGROUND_CLASS)  # (..., B, Q)
        slot_logits, windows_per_query = positive_logits, 1
        if negative_logits is not None:
            slot_logits = torch.cat([positive_logits, negative_logits.expand_as(positive_logits)], dim=-3)
            target_classes = torch.cat([target_classes, torch.full_like(target_classes, BACKGROUND_CLASS)], dim=-2)
            windows_per_query = 2
        class_weights = torch.ones(2, dtype=slot_logits.dtype, device=slot_logits.device)
        class_weights[BACKGROUND_CLASS] = self.background_class_weight
        # cross_entropy wants the class axis second: (windows, 2, Q) logits against (windows, Q) targets.
        slot_losses = F.cross_entropy(
            slot_logits.reshape(-1, num_slots, 2).transpose(1, 2),
            target_classes.reshape(-1, num_slots),
            class_weights,
            reduction="none",
        )
        return slot_losses.reshape(*leading, -1).sum(-1) / (num_windows * windows_per_query * num_slots)

    def loss_saliency(
        self,
        positive_saliency: torch.Tensor,
        positive_frames: torch.Tensor,
        negative_frames: torch.Tensor,
        negative_window_saliency: torch.Tensor | None,
        negative_window_mask: torch.Tensor | None,
        num_windows: float,
    ) -> torch.Tensor:
        """Saliency ranking inside the positive windows, plus the negative-window terms when they are given.

        Args:
            positive_saliency (`torch.Tensor` of shape `(B, Lv)`): saliency scores of the positive windows.
            positive_frames (`torch.LongTensor` of shape `(B, K)`): frames inside each target moment.
            negative_frames (`torch.LongTensor` of shape `(B, K)`): frames of the same window outside the moment.
            negative_window_saliency (`torch.Tensor` of shape `(B, Lv)`, *optional*): saliency scores of the negative
                windows (`"paired_negative"`), padded positions included.
            negative_window_mask (`torch.Tensor` of shape `(B, Lv)`, *optional*): valid frames of the negative
                windows, 1 = valid; required with `negative_window_saliency`.
            num_windows (`float`): window count to divide by.

        Returns:
            `torch.Tensor`: 0-d loss.
        """
        pairs_per_window = positive_frames.shape[1]
        inside_scores = positive_saliency.gather(1, positive_frames)  # (B, K)
        outside_scores = positive_saliency.gather(1, negative_frames)  # (B, K)
        # The factor 2 keeps the scale of the original pairwise ranking loss.
        loss = (
            (self.saliency_margin + outside_scores - inside_scores).clamp(min=0).sum()
            / (num_windows * pairs_per_window)
            * 2
        )
        if negative_window_saliency is None:
            return loss
        # The hardest frame of the negative window must score below the positive frame. As in the original, the
        # max runs over every position, padded ones included (their scores are computed like real ones).
        hardest_negative = negative_window_saliency.max(dim=1, keepdim=True).values  # (B, 1)
        loss = (
            loss
            + (self.saliency_margin + hardest_negative - inside_scores).clamp(min=0).sum()
            / (num_windows * pairs_per_window)
            * 2
        )
        # −log(1 − σ(s)) summed over the negative window's own valid frames; written as softplus(s), the same
        # function without the overflow of 1 − σ(s) → 0 (agrees with the fixtures and with a float64 evaluation).
        negative_mask = negative_window_mask.to(negative_window_saliency.dtype)
        return loss + (F.softplus(negative_window_saliency) * negative_mask).sum() / num_windows

    def loss_retrieval(
        self, window_logits: torch.Tensor, batch_mode: str, num_queries: int, num_windows: float
    ) -> torch.Tensor:
        """Window retrieval loss on the raw window logits.

        Args:
            window_logits (`torch.Tensor` of shape `(N, 1)`): retrieval logit of every pair.
            batch_mode (`str`): `"cross_pairs"` (symmetric InfoNCE over the `B×B` matrix, diagonal = positives) or
                `"paired_negative"` (hinge between each query's positive and negative window).
            num_queries (`int`): `B`, the local number of queries (`N = B²` or `2B`).
            num_windows (`float`): window count to divide by.

        Returns:
            `torch.Tensor`: 0-d loss.
        """
        if batch_mode == "cross_pairs":
            # Z[i, j] = logit of (query i, window of query j): rows are queries, columns windows.
            similarity = window_logits.reshape(num_queries, num_queries) / self.contrastive_temperature
            diagonal = torch.arange(num_queries, device=window_logits.device)
            query_to_window = F.cross_entropy(similarity, diagonal, reduction="sum") / num_windows
            window_to_query = F.cross_entropy(similarity.T, diagonal, reduction="sum") / num_windows
            return 0.5 * (query_to_window + window_to_query)
        positive_logits, negative_logits = window_logits[:num_queries], window_logits[num_queries:]  # (B, 1) each
        return (self.retrieval_margin + negative_logits - positive_logits).clamp(min=0).sum() / num_windows * 2

    @staticmethod
    def class_error(positive_logits: torch.Tensor, matched_slots: torch.Tensor) -> torch.Tensor:
        """Percentage of matched slots whose argmax class is not foreground (logging only).

        Args:
            positive_logits (`torch.Tensor` of shape `(B, Q, 2)` or `(L, B, Q, 2)`): class logits of the positive
                windows (of each decoder layer).
            matched_slots (`torch.LongTensor` of shape `(B,)` or `(L, B)`): matched slot of each window.

        Returns:
            `torch.Tensor` of shape `()` or `(L,)`: detached, in percent.
        """
        index = matched_slots[..., None, None].expand(*matched_slots.shape, 1, 2)
        matched_logits = positive_logits.detach().gather(-2, index)[..., 0, :]  # (..., B, 2)
        correct = (matched_logits.argmax(-1) == FOREGROUND_CLASS).to(matched_logits.dtype)
        # Same float order as the original's accuracy: 100 − (#correct × 100/B).
        return 100.0 - correct.sum(-1) * (100.0 / positive_logits.shape[-3])

    # ---- helpers ----

    def _decoder_layer_outputs(self, outputs: Mapping, *, include_auxiliary: bool) -> list[tuple[str, Mapping]]:
        """`(key suffix, layer outputs)` for the last layer (suffix "") then, if asked, layers 0..L-2 (`_{l}`)."""
        layers = [("", outputs)]
        if include_auxiliary:
            auxiliary_outputs = outputs.get("auxiliary_outputs")
            if not isinstance(auxiliary_outputs, Sequence) or len(auxiliary_outputs) != self.num_decoder_layers - 1:
                found = len(auxiliary_outputs) if isinstance(auxiliary_outputs, Sequence) else auxiliary_outputs
                raise ValueError(
                    f"`outputs['auxiliary_outputs']` must list the {self.num_decoder_layers - 1} decoder layers "
                    f"before the last (`use_auxiliary_loss` is on), got {found!r}."
                )
            layers += [(f"_{layer}", layer_outputs) for layer, layer_outputs in enumerate(auxiliary_outputs)]
        for suffix, layer_outputs in layers:
            where = "outputs" if not suffix else f"outputs['auxiliary_outputs'][{suffix[1:]}]"
            for key in ("logits", "pred_spans"):
                if key not in layer_outputs:
                    raise ValueError(f"`{where}` is missing the key {key!r}.")
            if layer_outputs["logits"].shape != outputs["logits"].shape:
                raise ValueError(f"`{where}['logits']` must have shape {tuple(outputs['logits'].shape)}.")
            if layer_outputs["pred_spans"].shape != outputs["logits"].shape:
                raise ValueError(f"`{where}['pred_spans']` must have shape {tuple(outputs['logits'].shape)}.")
        return layers

    @staticmethod
    def _stacked_layer_outputs(
        layers: list[tuple[str, Mapping]], rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`logits` and `pred_spans` of `rows` for every layer of `layers`, stacked in that order: `(L, B, Q, 2)` each."""
        logits = torch.stack([layer["logits"] for _, layer in layers])[:, rows]
        pred_spans = torch.stack([layer["pred_spans"] for _, layer in layers])[:, rows]
        return logits, pred_spans

    def _check_outputs(self, outputs: Mapping, video_mask: torch.Tensor) -> None:
        """Keys and shapes of the model outputs this loss reads."""
        for key in ("logits", "pred_spans", "saliency_scores", "window_logits"):
            if key not in outputs or outputs[key] is None:
                raise ValueError(f"`outputs` is missing the key {key!r}.")
        logits = outputs["logits"]
        if logits.ndim != 3 or logits.shape[-1] != 2:
            raise ValueError(f"`outputs['logits']` must have shape (N, Q, 2), got {tuple(logits.shape)}.")
        # Moment outputs cover the G grounded pairs (all N unless `grounding_pair_index` is set); the rest N.
        num_grounded = logits.shape[0]
        grounding_pair_index = outputs.get("grounding_pair_index")
        if grounding_pair_index is not None and tuple(grounding_pair_index.shape) != (num_grounded,):
            raise ValueError(
                f"`outputs['grounding_pair_index']` must have shape ({num_grounded},) like `outputs['logits']`, "
                f"got {tuple(grounding_pair_index.shape)}."
            )
        num_pairs = outputs["window_logits"].shape[0] if grounding_pair_index is not None else num_grounded
        if outputs["window_logits"].shape != (num_pairs, 1):
            raise ValueError(
                f"`outputs['window_logits']` must have shape ({num_pairs}, 1), "
                f"got {tuple(outputs['window_logits'].shape)}."
            )
        saliency_scores = outputs["saliency_scores"]
        if saliency_scores.ndim != 2 or saliency_scores.shape[0] != num_grounded:
            raise ValueError(
                f"`outputs['saliency_scores']` must have shape ({num_grounded}, Lv), "
                f"got {tuple(saliency_scores.shape)}."
            )
        if not isinstance(video_mask, torch.Tensor) or video_mask.shape != (num_pairs, saliency_scores.shape[1]):
            shape = tuple(video_mask.shape) if isinstance(video_mask, torch.Tensor) else type(video_mask).__name__
            raise ValueError(
                f"`video_mask` must have shape {(num_pairs, saliency_scores.shape[1])} (pairs, frames of "
                f"`outputs['saliency_scores']`), got {shape}."
            )

    # ---- entry points ----

    def matched_slots(self, outputs: Mapping, labels: RGNetLabels) -> torch.Tensor:
        """Matched slot of every positive window at every decoder layer (for tests and debugging).

        Args:
            outputs (`Mapping`): model outputs as for `__call__`; `auxiliary_outputs` is used when present.
            labels ([`RGNetLabels`]): the targets.

        Returns:
            `torch.LongTensor` of shape `(L, B)`: row `l` is decoder layer `l`, the last row the last layer (a single
            row when `outputs` has no auxiliary outputs).
        """
        logits = outputs["logits"]
        grounding_pair_index = outputs.get("grounding_pair_index")
        num_pairs = logits.shape[0] if grounding_pair_index is None else outputs["window_logits"].shape[0]
        validate_labels(labels, num_pairs)
        num_windows = labels["spans"].shape[0]
        positive_rows = _grounded_rows(
            _positive_rows(labels["batch_mode"], num_windows, logits.device), grounding_pair_index, num_pairs
        )
        target_spans = labels["spans"].to(device=logits.device, dtype=logits.dtype)
        layers = self._decoder_layer_outputs(outputs, include_auxiliary=bool(outputs.get("auxiliary_outputs")))
        slots_by_layer = self.matcher(*self._stacked_layer_outputs(layers, positive_rows), target_spans)
        # Layers were listed last-first; put the last layer in the last row.
        return torch.cat([slots_by_layer[1:], slots_by_layer[:1]])

    # Eager under `torch.compile`: the label checks and the loss normalisers need values on the host (graph breaks),
    # and the stacked layers leave few operators to fuse.
    @torch.compiler.disable
    def __call__(
        self, outputs: Mapping, labels: RGNetLabels, video_mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Compute every weighted term and the total.

        Args:
            outputs (`Mapping`): model outputs for `N` pairs (a `ModelOutput` works):
                `logits` (`(N, Q, 2)`), `pred_spans` (`(N, Q, 2)` `(center, width)`), `window_logits` (`(N, 1)`),
                `saliency_scores` (`(N, Lv)`, padded positions included) and, when `use_auxiliary_loss`,
                `auxiliary_outputs`: a list over decoder layers `0..L−2` of mappings with `logits` and
                `pred_spans` (each `(N, Q, 2)`). With `grounding_pair_index` `(G,)` (optional), the moment outputs and
                saliency hold only those `G` pairs, row `g` = pair `grounding_pair_index[g]`; they must include
                every pair the loss reads.
            labels ([`RGNetLabels`]): the targets; `labels["batch_mode"]` fixes the row layout.
            video_mask (`torch.Tensor` of shape `(N, Lv)`): 1 (or True) = valid frame.

        Returns:
            `tuple`: `loss` (0-d total `Σ weight · term`), `loss_dict` (the unweighted terms, original names) and
            `metrics` (logging-only `class_error`, `class_error_{l}`).

        Raises:
            ValueError: on malformed `labels`, `outputs` or `video_mask` (the message names the argument).
        """
        self._check_outputs(outputs, video_mask)
        outputs = _float32_outputs(outputs)
        logits = outputs["logits"]
        device, dtype = logits.device, logits.dtype
        num_pairs = outputs["window_logits"].shape[0]
        validate_labels(labels, num_pairs, num_frames=outputs["saliency_scores"].shape[1], video_mask=video_mask)
        layers = self._decoder_layer_outputs(outputs, include_auxiliary=self.use_auxiliary_loss)

        batch_mode = labels["batch_mode"]
        paired_negative = batch_mode == "paired_negative"
        num_queries = labels["spans"].shape[0]
        # Pair indices of the positive (and negative) windows, then their rows in the moment outputs.
        negative_pairs = torch.arange(num_queries, 2 * num_queries, device=device) if paired_negative else None
        grounding_pair_index = outputs["grounding_pair_index"]
        positive_rows = _grounded_rows(
            _positive_rows(batch_mode, num_queries, device), grounding_pair_index, num_pairs
        )
        negative_rows = _grounded_rows(negative_pairs, grounding_pair_index, num_pairs) if paired_negative else None
        target_spans = labels["spans"].to(device=device, dtype=dtype)
        num_windows = _windows_per_process(num_queries, device)
        weights = self.loss_weights

        # Every decoder layer at once (one matching cost, one host copy, one kernel per operation for all layers):
        # outputs stacked `(L, B, Q, 2)` in the order of `layers`, the last layer first.
        layer_logits, layer_spans = self._stacked_layer_outputs(layers, positive_rows)
        matched_slots = self.matcher(layer_logits, layer_spans, target_spans)  # (L, B)
        matched_spans = layer_spans.gather(2, matched_slots[:, :, None, None].expand(-1, -1, 1, 2))[:, :, 0]
        layer_terms: dict[str, torch.Tensor] = {}  # term -> (L,) values
        if weights["loss_span"] != 0:
            layer_terms["loss_span"] = self.loss_span(matched_spans, target_spans, num_windows)
        if weights["loss_giou"] != 0:
            layer_terms["loss_giou"] = self.loss_giou(matched_spans, target_spans, num_windows)
        if weights["loss_label"] != 0:
            # Original quirk, kept for parity (the fixtures confirm it): every decoder layer's label loss appends the
            # negative windows' LAST-layer logits, not that layer's own negative-window logits.
            negative_logits = logits[negative_rows] if paired_negative else None
            layer_terms["loss_label"] = self.loss_label(layer_logits, matched_slots, negative_logits, num_windows)
        class_errors = self.class_error(layer_logits, matched_slots)  # (L,)

        # Window-level terms once, listed after the last layer's terms (the original's order).
        window_terms: dict[str, torch.Tensor] = {}
        if weights["loss_saliency"] != 0:
            saliency_scores = outputs["saliency_scores"]
            window_terms["loss_saliency"] = self.loss_saliency(
                saliency_scores[positive_rows],
                labels["saliency_positive_frames"].to(device),
                labels["saliency_negative_frames"].to(device),
                saliency_scores[negative_rows] if paired_negative else None,
                video_mask[negative_pairs] if paired_negative else None,
                num_windows,
            )
        if weights["loss_retrieval"] != 0:
            window_terms["loss_retrieval"] = self.loss_retrieval(
                outputs["window_logits"], batch_mode, num_queries, num_windows
            )

        loss_dict: dict[str, torch.Tensor] = {}
        metrics: dict[str, torch.Tensor] = {}
        for position, (suffix, _) in enumerate(layers):
            loss_dict.update({f"{term}{suffix}": values[position] for term, values in layer_terms.items()})
            metrics[f"class_error{suffix}"] = class_errors[position]
            if not suffix:
                loss_dict.update(window_terms)
        # A layer's term has the weight of its last-layer term, so the total weights each term's sum over layers.
        loss = weighted_loss_sum({**layer_terms, **window_terms}, weights)
        return loss, loss_dict, metrics


__all__ = [
    "RGNetHungarianMatcher",
    "RGNetLabels",
    "RGNetLoss",
    "generalized_temporal_iou",
    "span_cxw_to_xx",
    "span_xx_to_cxw",
    "temporal_iou",
    "validate_labels",
    "weighted_loss_sum",
]
