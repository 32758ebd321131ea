"""RGNet processing: query normalisation, window arithmetic, the processor, post-processing and the training collator.

Everything that turns a long video and its queries into model inputs, and model outputs back into ranked moments,
lives here (spec `rgnet-spec.md` §2, §6.1-6.2, §7):

1. Query normalisation, one function per dataset convention (§2).
2. Window arithmetic as vectorised pure functions (§6.1, §7.1): window enumeration, positive and negative window
   ids of a moment, the Gaussian-preferred positive draw, target spans and saliency frames. They are the single
   source of this arithmetic for the processor, the collator and the evaluation code.
3. Post-processing (§7, §7.5): window ranking, span decoding to seconds, the matching score, score fusion, the merge
   of identical spans and temporal NMS, reproducing the original implementation's ranked lists.
4. `RGNetProcessor`: a tokenizer plus the windowing and inference settings. `processor(...)` batches all windows of
   one video with one or more queries into model inputs; `post_process_video_grounding` decodes the outputs.
5. Training: `read_training_example` reads one query's sampled windows from a feature store,
   `RGNetDataCollator` builds `cross_pairs` or `paired_negative` batches with `labels`.

Symbols used in shape docs: `T` frames of a video, `W` windows of a video, `Lmax` window length (frames), `s` window
stride (frames), `n` valid length of a window, `w0` its first frame, `N` (query, window) pairs, `Nq` queries, `Q`
moment slots per window, `Lv` padded window length, `Lt` text tokens, `Dv`/`Dt`/`Dc` feature widths, `B` training
queries per batch, `K` saliency pairs per query. Masks use 1 = valid.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PROCESSOR_NAME as PROCESSOR_CONFIG_NAME
from transformers.utils import logging

try:
    from .configuration_rgnet import PAIR_MODES, QUERY_NORMALIZATIONS, RGNetConfig
    from .modeling_rgnet import _all_finite
except ImportError:
    from configuration_rgnet import PAIR_MODES, QUERY_NORMALIZATIONS, RGNetConfig
    from modeling_rgnet import _all_finite

logger = logging.get_logger(__name__)

# Added to the token norm before dividing, as the original loader does (spec §2).
TEXT_NORM_EPS = 1e-5
# Guards the normalisation of an all-zero frame in the matching score (the original would produce NaN there).
FRAME_NORM_EPS = 1e-12


# ---- Query normalisation (spec §2) ----


def _strip_query(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string, got {type(text).__name__}.")
    # Chained strips in this order (not one `strip(". ?")`): the convention of the released feature extractors,
    # e.g. "a. ?" keeps its inner "." ("a. " after the strips).
    return text.strip(".").strip(" ").strip("?")


def normalize_mad_query(text: str) -> str:
    """Normalise a MAD query the way its CLIP token features were extracted (spec §2).

    Strips `.`, then spaces, then `?` from both ends (three chained strips) and appends `.`.

    Args:
        text (`str`): The raw sentence.

    Returns:
        `str`: The normalised sentence.

    Raises:
        ValueError: If `text` is not a string or nothing is left after stripping.
    """
    stripped = _strip_query(text)
    if not stripped.strip():
        raise ValueError(f"`text` is empty after MAD query normalisation: {text!r}.")
    return stripped + "."


def normalize_ego4d_query(text: str) -> str:
    """Normalise an Ego4D-NLQ question the way its CLIP and EgoVLP features were extracted (spec §2).

    Strips `.`, then spaces, then `?` from both ends, lower-cases and appends `?`.

    Args:
        text (`str`): The raw question.

    Returns:
        `str`: The normalised question.

    Raises:
        ValueError: If `text` is not a string or nothing is left after stripping.
    """
    stripped = _strip_query(text)
    if not stripped.strip():
        raise ValueError(f"`text` is empty after Ego4D query normalisation: {text!r}.")
    return stripped.lower() + "?"


QUERY_NORMALIZERS = {"mad": normalize_mad_query, "ego4d": normalize_ego4d_query}


def normalize_query(text: str, convention: str) -> str:
    """Normalise a query with the named dataset convention (`"mad"` or `"ego4d"`, spec §2).

    Args:
        text (`str`): The raw query.
        convention (`str`): `RGNetConfig.query_normalization`.

    Returns:
        `str`: The normalised query.
    """
    if convention not in QUERY_NORMALIZERS:
        raise ValueError(f"Unknown `query_normalization` {convention!r}; expected one of {QUERY_NORMALIZATIONS}.")
    return QUERY_NORMALIZERS[convention](text)


# ---- Text token features (spec §2) ----


def l2_normalize_text_features(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise token features as the original loader does: `x / (‖x‖ + 1e-5)` per token.

    Args:
        features (`torch.Tensor` of shape `(..., Dt)`): Raw token features.

    Returns:
        `torch.Tensor` of the same shape and dtype.
    """
    return features / (features.norm(dim=-1, keepdim=True) + TEXT_NORM_EPS)


# Feature dtypes sent to a device as they are and converted to float32 there (no larger, and every device has them).
_SENT_AS_THEY_ARE = (torch.float16, torch.bfloat16, torch.float32)

# Copies between the host and a CUDA device of at least this many bytes go through page-locked host memory. From
# pageable memory the driver stages a copy chunk by chunk through a small page-locked buffer of its own; on the H200
# machine the benchmark's per-video preparation, whose one large step is that copy (74 MB of frames for a 2-hour MAD
# movie), took 60-110 ms. Above `PINNED_COPY_MAX_BYTES` the copy stays pageable: PyTorch's caching host allocator keeps
# page-locked buffers (rounded up to a power of two) for reuse, taken from the memory the host can page.
PINNED_COPY_MIN_BYTES = 1 << 20
PINNED_COPY_MAX_BYTES = 1 << 30


def copy_to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor.to(device)`, through page-locked host memory for a large copy between the host and a CUDA device.

    To the device, the tensor is copied into page-locked memory (PyTorch's caching host allocator keeps the buffer for
    the next video) and sent from there without blocking the host, on the current stream, so later work on that
    stream sees the values; the allocator does not hand the buffer out again before the transfer is done. To the
    host, it lands in page-locked memory, the copy done when this returns. Elsewhere (outside [`PINNED_COPY_MIN_BYTES`]
    to [`PINNED_COPY_MAX_BYTES`], other devices, a tensor already there or already page-locked) it is
    `tensor.to(device)`.

    Args:
        tensor (`torch.Tensor`): Any tensor.
        device (`torch.device` or `str`): Where it should go.

    Returns:
        `torch.Tensor` on `device`.
    """
    device = torch.device(device)
    large = PINNED_COPY_MIN_BYTES <= tensor.numel() * tensor.element_size() <= PINNED_COPY_MAX_BYTES
    if large and tensor.device.type == "cpu" and device.type == "cuda" and not tensor.is_pinned():
        return tensor.pin_memory().to(device, non_blocking=True)
    if large and tensor.device.type == "cuda" and device.type == "cpu":
        return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor)
    return tensor.to(device)


def _as_float_tensor(
    value: Any,
    name: str,
    *,
    keep_device: bool = False,
    device: torch.device | str | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """`value` as a float32 tensor: on `device` if given, else on the CPU unless `keep_device` (a tensor then stays
    where it is). Sent to `device` in its own dtype and converted there (float16 features cross at half the size).
    NaN and infinite values are refused unless `check_finite=False` (the caller checks them)."""
    if isinstance(value, torch.Tensor):
        target = device if device is not None else (None if keep_device else "cpu")
        tensor = value.detach()
        if tensor.dtype not in _SENT_AS_THEY_ARE:  # float64, integers: float32 before they cross
            tensor = tensor.float()
        tensor = (tensor if target is None else copy_to_device(tensor, target)).float()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:  # e.g. ragged nesting
            raise ValueError(f"`{name}` must be a numeric array, got {type(value).__name__}.") from error
        if array.dtype.kind not in "biuf":
            # None (or a list holding one) would read as NaN, and strings would be parsed: neither is a feature.
            raise ValueError(f"`{name}` must be a numeric array, got {type(value).__name__} with dtype {array.dtype}.")
        if device is not None and array.dtype in (np.dtype(np.float16), np.dtype(np.float32)):  # native byte order
            tensor = copy_to_device(torch.as_tensor(array), device).float()
        else:
            tensor = torch.as_tensor(array.astype(np.float32, copy=False))
            tensor = tensor if device is None else copy_to_device(tensor, device)
    if check_finite and not _all_finite(tensor):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return tensor


def prepare_text_features(text_features: Sequence[Any], max_text_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate, L2-normalise and pad the token features of several queries.

    Args:
        text_features (sequence of `Nq` arrays of shape `(Lt_i, Dt)`): Raw token features per query (numpy or torch).
        max_text_tokens (`int`): Tokens kept per query (`RGNetConfig.max_text_tokens`).

    Returns:
        `tuple(torch.FloatTensor, torch.FloatTensor)`: features `(Nq, Lt, Dt)` (zero padded, `Lt` = longest kept
        length) and mask `(Nq, Lt)` (1 = real token).
    """
    if len(text_features) == 0:
        raise ValueError("`text_features` must hold at least one query.")
    tensors = []
    for index, item in enumerate(text_features):  # one entry per query, not per token
        if item is None:
            raise ValueError(f"`text_features[{index}]` must be an array of shape (Lt, Dt), got None.")
        tensor = _as_float_tensor(item, f"text_features[{index}]", check_finite=False)  # checked below, at once
        if tensor.ndim != 2 or 0 in tensor.shape:
            raise ValueError(
                f"`text_features[{index}]` must have shape (num_tokens >= 1, Dt >= 1), got {tuple(tensor.shape)}."
            )
        tensors.append(tensor)
    widths = {tensor.shape[1] for tensor in tensors}
    if len(widths) != 1:
        raise ValueError(f"All `text_features` must have the same width Dt, got {sorted(widths)}.")
    if not _all_finite(torch.cat(tensors)):  # every token, kept or not, in one pass; the culprit named
        index = next(index for index, tensor in enumerate(tensors) if not _all_finite(tensor))
        raise ValueError(f"`text_features[{index}]` contains NaN or infinite values.")
    kept = [tensor[:max_text_tokens] for tensor in tensors]
    lengths = torch.tensor([tensor.shape[0] for tensor in kept])
    # Normalised once for the batch: the zero padding stays zero (0 / (0 + eps)).
    features = l2_normalize_text_features(torch.nn.utils.rnn.pad_sequence(kept, batch_first=True))  # (Nq, Lt, Dt)
    mask = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).float()  # (Nq, Lt)
    return features, mask


# ---- Window arithmetic (spec §6.1, §7.1) ----


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _check_window_settings(max_window_frames: int, window_stride: int) -> None:
    _check_positive_int(max_window_frames, "max_window_frames")
    _check_positive_int(window_stride, "window_stride")
    if window_stride >= max_window_frames:
        # Window i starts at (i - 1)·s, so window 0 holds max_window_frames - s frames.
        raise ValueError(
            f"`window_stride` ({window_stride}) must be smaller than `max_window_frames` ({max_window_frames}); "
            "otherwise window 0 is empty."
        )


def _check_num_frames(num_frames: Any) -> np.ndarray:
    frames = np.asarray(num_frames)
    if not np.issubdtype(frames.dtype, np.integer) or (frames < 1).any():
        raise ValueError(f"`num_frames` must hold positive integers, got {num_frames!r}.")
    return frames.astype(np.int64)


def _as_seconds_array(timestamps: Any, name: str = "timestamps") -> np.ndarray:
    """`timestamps` as float64 seconds; a ValueError naming `name` unless they are real numbers (numeric strings and
    booleans are refused, as for every other number here, rather than parsed)."""
    try:
        moment = np.asarray(timestamps)
    except ValueError:  # ragged nesting
        raise ValueError(f"`{name}` must be [start, end] pairs of seconds, got {timestamps!r}.") from None
    if moment.dtype.kind not in "iuf":
        raise ValueError(f"`{name}` must hold numbers of seconds, got {timestamps!r} ({moment.dtype}).")
    return moment.astype(np.float64)


def _check_finite_number(value: Any, name: str) -> float:
    """`value` as a float; a ValueError naming `name` unless it is a real, finite number (a bool or a numeric string
    is not one: comparing a string would only fail later with a bare TypeError)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    return float(value)


def _check_seconds_per_frame(seconds_per_frame: Any) -> float:
    """`δ` as a float; it must be a positive finite number (an infinite or zero `δ` gives infinite or NaN seconds)."""
    if _check_finite_number(seconds_per_frame, "seconds_per_frame") <= 0:
        raise ValueError(f"`seconds_per_frame` must be positive, got {seconds_per_frame!r}.")
    return float(seconds_per_frame)


def _check_bool(value: Any, name: str) -> bool:
    """`value` as a bool; it must be one (a truthy string such as `"no"` must not silently mean `True`)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be a bool (True or False), got {value!r}.")
    return bool(value)


def compute_num_windows(num_frames: int | np.ndarray, window_stride: int) -> int | np.ndarray:
    """Number of windows of a video: `W = ceil(T / s) + 1` (spec §6.1).

    Args:
        num_frames (`int` or `np.ndarray` of shape `(B,)`): Frames `T` of each video (≥ 1).
        window_stride (`int`): Stride `s` in frames.

    Returns:
        `int` or `np.ndarray` of shape `(B,)`.
    """
    frames = _check_num_frames(num_frames)
    window_stride = _check_positive_int(window_stride, "window_stride")
    windows = -(-frames // window_stride) + 1  # integer ceil
    return int(windows) if windows.ndim == 0 else windows


def window_bounds(
    window_ids: int | np.ndarray, num_frames: int | np.ndarray, max_window_frames: int, window_stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """First frame and valid length of windows: window `i` covers `[max((i−1)s, 0), min((i−1)s + Lmax, T))`.

    This is the only place the window layout is written down. Window 0 is a truncated window at the start, the
    last windows are truncated at the end, and a video shorter than a window gives truncated windows only.

    Args:
        window_ids (`int` or `np.ndarray` of shape `(...)`): Window indices `i ≥ 0`.
        num_frames (`int` or `np.ndarray` broadcastable to `window_ids`): Frames `T` of the video(s).
        max_window_frames (`int`): Window length `Lmax`.
        window_stride (`int`): Stride `s`.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: offsets `w0` and valid lengths `n` (int64, shape of the broadcast).

    Raises:
        ValueError: on invalid window settings or frame counts, or a window id outside `[0, W)` of its video.
    """
    _check_window_settings(max_window_frames, window_stride)
    frames = _check_num_frames(num_frames)
    ids = np.asarray(window_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"`window_ids` must hold integers, got {window_ids!r}.")
    ids = ids.astype(np.int64)
    outside = (ids < 0) | (ids >= compute_num_windows(frames, window_stride))
    if outside.any():
        raise ValueError(
            f"`window_ids` must lie in [0, W) with W = ceil(T / window_stride) + 1 windows; got {window_ids!r} for "
            f"num_frames {num_frames!r}."
        )
    nominal_start = (ids - 1) * window_stride
    offsets = np.maximum(nominal_start, 0)
    ends = np.minimum(nominal_start + max_window_frames, frames)
    return offsets, ends - offsets


def enumerate_windows(num_frames: int, max_window_frames: int, window_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """All `W = ceil(T/s) + 1` windows of a video (spec §6.1, §7.1).

    Args:
        num_frames (`int`): Frames `T` of the video (≥ 1).
        max_window_frames (`int`): Window length `Lmax`.
        window_stride (`int`): Stride `s` (< `Lmax`).

    Returns:
        `tuple(np.ndarray, np.ndarray)`: offsets `w0` `(W,)` and valid lengths `n` `(W,)`, int64; every `n ≥ 1`.

    Example: `T = 57, Lmax = 40, s = 20` gives offsets `[0, 0, 20, 40]` and lengths `[20, 40, 37, 17]`.
    """
    _check_window_settings(max_window_frames, window_stride)
    frames = _check_num_frames(num_frames)
    if frames.ndim != 0:
        raise ValueError(f"`num_frames` must be a single integer, got shape {frames.shape}.")
    num_windows = compute_num_windows(int(frames), window_stride)
    return window_bounds(np.arange(num_windows), int(frames), max_window_frames, window_stride)


@dataclass(frozen=True)
class MomentFrames:
    """A moment converted to frames, with what had to be corrected.

    Attributes:
        frames (`np.ndarray` of shape `(..., 2)`, float64): `(α, β)` in frames, `0 ≤ α ≤ β ≤ T`.
        swapped (`np.ndarray` of shape `(...)`, bool): The timestamps were given as `(end, start)` and were swapped.
        clipped (`np.ndarray` of shape `(...)`, bool): A bound lay outside `[0, T]` and was clipped.
    """

    frames: np.ndarray
    swapped: np.ndarray
    clipped: np.ndarray


def moment_to_frames(timestamps: Any, seconds_per_frame: float, num_frames: int | np.ndarray) -> MomentFrames:
    """Convert `[start, end]` seconds to frames `(α, β) = (a/δ, b/δ)` (floats), swap if reversed, clip to `[0, T]`.

    Reversed and out-of-range moments are corrected, not rejected; what was corrected is returned so the caller can
    report it (spec §6.1 step 1).

    Args:
        timestamps (array-like of shape `(..., 2)`): `[start, end]` in seconds.
        seconds_per_frame (`float`): `δ`.
        num_frames (`int` or `np.ndarray` broadcastable to `(...)`): Frames `T` of the video(s).

    Returns:
        [`MomentFrames`].
    """
    moment = _as_seconds_array(timestamps)
    if moment.ndim == 0 or moment.shape[-1] != 2:
        raise ValueError(f"`timestamps` must have shape (..., 2) as [start, end] seconds, got {moment.shape}.")
    if not np.isfinite(moment).all():
        raise ValueError("`timestamps` contains NaN or infinite values.")
    seconds_per_frame = _check_seconds_per_frame(seconds_per_frame)
    frames_total = _check_num_frames(num_frames).astype(np.float64)[..., None]
    frames = moment / seconds_per_frame
    swapped = frames[..., 0] > frames[..., 1]
    frames = np.sort(frames, axis=-1)
    clipped_frames = np.clip(frames, 0.0, frames_total)
    clipped = (clipped_frames != frames).any(axis=-1)
    return MomentFrames(frames=clipped_frames, swapped=swapped, clipped=clipped)


def positive_window_range(
    moment_frames: np.ndarray, num_frames: int | np.ndarray, max_window_frames: int, window_stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the windows overlapping a moment: `{first, …, last}` (spec §6.1 step 2, §8 window recall).

    For the recipes' `Lmax = 2s` this is exactly `{⌊α/s⌋, …, ⌈β/s⌉}`. In general it is the set of windows whose
    nominal span `[(i−1)s, (i−1)s + Lmax)` overlaps `(α, β)`: `last = ⌈β/s⌉` and
    `first = ⌊(α − Lmax mod s)/s⌋ + 2 − ⌊Lmax/s⌋`, clamped to `[0, W−1]`. Every other window is a negative.

    Args:
        moment_frames (`np.ndarray` of shape `(..., 2)`): `(α, β)` in frames, as returned by `moment_to_frames`.
        num_frames (`int` or `np.ndarray` broadcastable to `(...)`): Frames `T` of the video(s).
        max_window_frames (`int`): `Lmax`.
        window_stride (`int`): `s`.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: `first` and `last` window ids (int64, shape `(...)`), `first ≤ last`.
    """
    _check_window_settings(max_window_frames, window_stride)
    moment = np.asarray(moment_frames, dtype=np.float64)
    num_windows = np.asarray(compute_num_windows(num_frames, window_stride))
    whole, remainder = divmod(max_window_frames, window_stride)
    first = np.floor((moment[..., 0] - remainder) / window_stride).astype(np.int64) + 2 - whole
    last = np.ceil(moment[..., 1] / window_stride).astype(np.int64)
    first = np.clip(first, 0, num_windows - 1)
    last = np.clip(np.maximum(last, first), 0, num_windows - 1)
    return first, last


def positive_window_weights(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian preference over the positive windows: `φ(i − mean(P))` for `i ∈ P = {first, …, last}`.

    Args:
        first (`np.ndarray` of shape `(B,)`): First positive window id per query.
        last (`np.ndarray` of shape `(B,)`): Last positive window id per query.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: probabilities `(B, Pmax)` over the offsets `0 … Pmax−1` from `first` (rows
        sum to 1; zero beyond `last`), and the counts `|P|` `(B,)`.
    """
    first = np.atleast_1d(np.asarray(first, dtype=np.int64))
    last = np.atleast_1d(np.asarray(last, dtype=np.int64))
    counts = last - first + 1
    offsets = np.arange(int(counts.max()))[None, :]  # (1, Pmax)
    centered = offsets - (counts[:, None] - 1) / 2.0  # i − mean(P)
    weights = np.where(offsets < counts[:, None], np.exp(-0.5 * centered**2), 0.0)  # φ up to a constant
    return weights / weights.sum(axis=1, keepdims=True), counts


def draw_positive_windows(first: np.ndarray, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one positive window per query with probability `∝ φ(i − mean(P))` (spec §6.1 step 3).

    Consumes `rng.random(B)`.

    Args:
        first (`np.ndarray` of shape `(B,)`): First positive window id per query.
        last (`np.ndarray` of shape `(B,)`): Last positive window id per query.
        rng (`np.random.Generator`): Random generator.

    Returns:
        `np.ndarray` of shape `(B,)`, int64: drawn window ids.
    """
    probabilities, counts = positive_window_weights(first, last)
    uniform = rng.random(probabilities.shape[0])
    cumulative = np.cumsum(probabilities, axis=1)
    chosen = np.minimum((cumulative <= uniform[:, None]).sum(axis=1), counts - 1)
    return np.atleast_1d(np.asarray(first, dtype=np.int64)) + chosen


def draw_negative_windows(
    first: np.ndarray, last: np.ndarray, num_windows: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw one window outside `{first, …, last}` uniformly per query (spec §6.1 step 7); `-1` where there is none.

    Consumes `rng.integers(0, ·, size=B)`.

    Args:
        first (`np.ndarray` of shape `(B,)`): First positive window id.
        last (`np.ndarray` of shape `(B,)`): Last positive window id.
        num_windows (`np.ndarray` of shape `(B,)`): Windows `W` of each query's video.
        rng (`np.random.Generator`): Random generator.

    Returns:
        `np.ndarray` of shape `(B,)`, int64.
    """
    first = np.atleast_1d(np.asarray(first, dtype=np.int64))
    num_positive = np.atleast_1d(np.asarray(last, dtype=np.int64)) - first + 1
    num_negative = np.broadcast_to(np.asarray(num_windows, dtype=np.int64), first.shape) - num_positive
    drawn = rng.integers(0, np.maximum(num_negative, 1))
    # Skip over the positive block: negatives are 0 … first−1 and last+1 … W−1.
    ids = drawn + np.where(drawn >= first, num_positive, 0)
    return np.where(num_negative > 0, ids, -1)


def window_target_spans(
    moment_frames: np.ndarray,
    window_ids: np.ndarray,
    num_frames: int | np.ndarray,
    max_window_frames: int,
    window_stride: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Target of a positive window: the moment clipped to the window, relative to it (spec §6.1 steps 4-5).

    Frames `[max((i−1)s, α) − w0, min((i−1)s + Lmax, β) − w0]`, divided by the valid length `n`.

    Args:
        moment_frames (`np.ndarray` of shape `(B, 2)`): `(α, β)` in frames.
        window_ids (`np.ndarray` of shape `(B,)`): Positive window per query.
        num_frames (`int` or `np.ndarray` of shape `(B,)`): Frames `T`.
        max_window_frames (`int`): `Lmax`.
        window_stride (`int`): `s`.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: spans `(B, 2)` float32 as `(center, width)` in `[0, 1]`, and the same target
        in window-relative frames `(B, 2)` float64 as `(start, end)`.
    """
    moment = np.asarray(moment_frames, dtype=np.float64)
    ids = np.asarray(window_ids, dtype=np.int64)
    offsets, lengths = window_bounds(ids, num_frames, max_window_frames, window_stride)
    nominal_start = (ids - 1) * window_stride
    start = np.maximum(nominal_start, moment[..., 0]) - offsets
    end = np.minimum(nominal_start + max_window_frames, moment[..., 1]) - offsets
    end = np.maximum(end, start)
    relative = np.stack([start, end], axis=-1)
    spans = np.stack([(start + end) / 2.0, end - start], axis=-1) / lengths[..., None]
    return spans.astype(np.float32), relative


def draw_saliency_frames(
    target_frames: np.ndarray, window_lengths: np.ndarray, rng: np.random.Generator, num_pairs: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Draw saliency frame pairs: one inside the target and one outside it, per pair (spec §6.1 step 6).

    The positive frame is uniform in `[⌊start⌋, ⌈end⌉)` (at least the frame holding `start`); the negative frame is
    uniform over the window's other frames, or `0` when the target covers the whole window. Consumes
    `rng.integers(·, ·, size=(B, K))` twice (positives, then negatives).

    Args:
        target_frames (`np.ndarray` of shape `(B, 2)`): Target `(start, end)` in window-relative frames.
        window_lengths (`np.ndarray` of shape `(B,)`): Valid length `n` of each window.
        rng (`np.random.Generator`): Random generator.
        num_pairs (`int`, *optional*, defaults to 1): `K` pairs per query.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: positive and negative frame indices `(B, K)`, int64, window-relative.
    """
    num_pairs = _check_positive_int(num_pairs, "num_pairs")
    target = np.asarray(target_frames, dtype=np.float64)
    lengths = np.asarray(window_lengths, dtype=np.int64)[:, None]  # (B, 1)
    low = np.minimum(np.floor(target[:, :1]).astype(np.int64), lengths - 1)
    high = np.clip(np.ceil(target[:, 1:]).astype(np.int64), low + 1, lengths)
    size = (target.shape[0], num_pairs)
    positives = rng.integers(low, high, size=size)
    inside = high - low
    num_outside = lengths - inside
    drawn = rng.integers(0, np.maximum(num_outside, 1), size=size)
    negatives = np.where(num_outside > 0, drawn + np.where(drawn >= low, inside, 0), 0)
    return positives.astype(np.int64), negatives.astype(np.int64)


@dataclass(frozen=True)
class RGNetWindowSample:
    """Sampled training windows of `B` queries (spec §6.1), all arrays with leading dimension `B`.

    Attributes:
        moment_frames (`np.ndarray` `(B, 2)`, float64): `(α, β)` after swapping and clipping.
        swapped (`np.ndarray` `(B,)`, bool): Timestamps were reversed and swapped.
        clipped (`np.ndarray` `(B,)`, bool): Timestamps were outside `[0, T]` and clipped.
        first_positive_window (`np.ndarray` `(B,)`, int64): First positive window id.
        last_positive_window (`np.ndarray` `(B,)`, int64): Last positive window id.
        positive_window (`np.ndarray` `(B,)`, int64): The drawn positive window.
        window_offset (`np.ndarray` `(B,)`, int64): Its first frame `w0`.
        window_length (`np.ndarray` `(B,)`, int64): Its valid length `n`.
        span (`np.ndarray` `(B, 2)`, float32): Target `(center, width)` normalised by `n`.
        saliency_positive_frames (`np.ndarray` `(B, K)`, int64): Window-relative frames inside the target.
        saliency_negative_frames (`np.ndarray` `(B, K)`, int64): Window-relative frames outside it.
        negative_window (`np.ndarray` `(B,)`, int64): A window not overlapping the moment, `-1` if none exists.
        negative_window_offset (`np.ndarray` `(B,)`, int64): Its first frame (0 when there is none).
        negative_window_length (`np.ndarray` `(B,)`, int64): Its valid length (0 when there is none).
    """

    moment_frames: np.ndarray
    swapped: np.ndarray
    clipped: np.ndarray
    first_positive_window: np.ndarray
    last_positive_window: np.ndarray
    positive_window: np.ndarray
    window_offset: np.ndarray
    window_length: np.ndarray
    span: np.ndarray
    saliency_positive_frames: np.ndarray
    saliency_negative_frames: np.ndarray
    negative_window: np.ndarray
    negative_window_offset: np.ndarray
    negative_window_length: np.ndarray


def sample_training_windows(
    timestamps: Any,
    num_frames: int | np.ndarray,
    rng: np.random.Generator,
    *,
    max_window_frames: int,
    window_stride: int,
    seconds_per_frame: float,
    num_saliency_pairs: int = 1,
) -> RGNetWindowSample:
    """Spec §6.1 steps 1-7 for `B` training queries, vectorised.

    Random numbers are drawn in this order, each call for all `B` queries at once: positive window
    (`rng.random`), saliency positives, saliency negatives, negative window. The same generator state and the same
    inputs give the same sample. Reversed or out-of-range timestamps are corrected and logged as a warning.

    Args:
        timestamps (array-like of shape `(B, 2)` or `(2,)`): `[start, end]` seconds per query.
        num_frames (`int` or array of shape `(B,)`): Frames `T` of each query's video.
        rng (`np.random.Generator`): Random generator.
        max_window_frames (`int`): `Lmax`.
        window_stride (`int`): `s`.
        seconds_per_frame (`float`): `δ`.
        num_saliency_pairs (`int`, *optional*, defaults to 1): `K`.

    Returns:
        [`RGNetWindowSample`].
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}.")
    _check_window_settings(max_window_frames, window_stride)
    num_saliency_pairs = _check_positive_int(num_saliency_pairs, "num_saliency_pairs")
    moment = _as_seconds_array(timestamps)
    if moment.ndim == 1:
        moment = moment[None, :]
    if moment.ndim != 2 or moment.shape[1] != 2 or len(moment) == 0:
        raise ValueError(f"`timestamps` must have shape (B, 2) with B >= 1, or (2,), got {moment.shape}.")
    frames = _check_num_frames(num_frames)
    if frames.ndim > 1 or frames.size not in (1, len(moment)):
        raise ValueError(f"`num_frames` must be one count or one per query ({len(moment)}), got shape {frames.shape}.")
    frames = np.broadcast_to(frames, moment.shape[:1])
    converted = moment_to_frames(moment, seconds_per_frame, frames)
    if converted.swapped.any() or converted.clipped.any():
        logger.warning(
            f"Corrected training moments: {int(converted.swapped.sum())} reversed (swapped), "
            f"{int(converted.clipped.sum())} outside the video (clipped to [0, T])."
        )
    first, last = positive_window_range(converted.frames, frames, max_window_frames, window_stride)
    positive = draw_positive_windows(first, last, rng)
    offsets, lengths = window_bounds(positive, frames, max_window_frames, window_stride)
    spans, target_frames = window_target_spans(converted.frames, positive, frames, max_window_frames, window_stride)
    saliency_positive, saliency_negative = draw_saliency_frames(target_frames, lengths, rng, num_saliency_pairs)
    negative = draw_negative_windows(first, last, compute_num_windows(frames, window_stride), rng)
    negative_offsets, negative_lengths = window_bounds(
        np.maximum(negative, 0), frames, max_window_frames, window_stride
    )
    has_negative = negative >= 0
    return RGNetWindowSample(
        moment_frames=converted.frames,
        swapped=converted.swapped,
        clipped=converted.clipped,
        first_positive_window=first,
        last_positive_window=last,
        positive_window=positive,
        window_offset=offsets,
        window_length=lengths,
        span=spans,
        saliency_positive_frames=saliency_positive,
        saliency_negative_frames=saliency_negative,
        negative_window=negative,
        negative_window_offset=np.where(has_negative, negative_offsets, 0),
        negative_window_length=np.where(has_negative, negative_lengths, 0),
    )


def gather_windows(
    video_features: torch.Tensor, window_offsets: np.ndarray, window_lengths: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut windows out of a video's frame features with one gather (no loop over windows or frames), on the
    features' device.

    Args:
        video_features (`torch.Tensor` of shape `(T, Dv)`): Per-frame features.
        window_offsets (`np.ndarray` of shape `(W,)`): First frame `w0` of each window.
        window_lengths (`np.ndarray` of shape `(W,)`): Valid length `n` of each window.

    Returns:
        `tuple(torch.Tensor, torch.FloatTensor)`: windows `(W, Lv, Dv)` zero padded to `Lv = max n`, and mask
        `(W, Lv)` (1 = real frame).
    """
    device = video_features.device
    window_lengths = np.asarray(window_lengths, dtype=np.int64)
    offsets = torch.as_tensor(np.asarray(window_offsets, dtype=np.int64), device=device)
    lengths = torch.as_tensor(window_lengths, device=device)
    local = torch.arange(int(window_lengths.max()), device=device)
    mask = local[None, :] < lengths[:, None]  # (W, Lv)
    frame_index = (offsets[:, None] + local[None, :]).clamp(max=video_features.shape[0] - 1)  # (W, Lv)
    windows = video_features[frame_index] * mask[..., None].to(video_features.dtype)  # (W, Lv, Dv)
    return windows, mask.float()


# ---- Reading training examples from a feature store (spec §6.1) ----


def read_training_example(
    query_row: Mapping[str, Any],
    feature_store: Any,
    rng: np.random.Generator,
    *,
    max_window_frames: int,
    window_stride: int,
    seconds_per_frame: float,
    num_saliency_pairs: int = 1,
    read_negative_window: bool = True,
) -> dict[str, Any]:
    """Sample one query's training windows and read only their frames from a feature store.

    Args:
        query_row (`Mapping`): A query row with `query_id`, `query`, `video_id` and `timestamps` (`[start, end]`
            seconds; must not be `None`), optionally `text_features` `(Lt, Dt)`.
        feature_store: An object with `num_frames(video_id) -> int` and
            `read_frames(video_id, start, end) -> np.ndarray` of shape `(end − start, Dv)`.
        rng (`np.random.Generator`): Random generator (see `sample_training_windows` for the draw order).
        max_window_frames (`int`): `Lmax`.
        window_stride (`int`): `s`.
        seconds_per_frame (`float`): `δ`.
        num_saliency_pairs (`int`, *optional*, defaults to 1): `K`.
        read_negative_window (`bool`, *optional*, defaults to `True`): Also read the negative window's frames
            (needed by `paired_negative` batches); otherwise `negative_video_features` is `None`.

    Returns:
        `dict`: a sample for [`RGNetDataCollator`]: `video_features` `(n, Dv)` float32 (the positive window),
        `negative_video_features` `(n', Dv)` or `None` (no negative window exists, or not requested), `span` `(2,)`,
        `saliency_positive_frames` `(K,)`, `saliency_negative_frames` `(K,)`, `text_features` (raw, as stored) or
        `query` (text), and bookkeeping: `query_id`, `video_id`, `positive_window`, `window_offset`,
        `negative_window`.
    """
    for key in ("video_id", "timestamps"):
        if key not in query_row:
            raise ValueError(f"`query_row` is missing the key {key!r}.")
    if query_row["timestamps"] is None:
        raise ValueError(
            f"`query_row['timestamps']` is None for query {query_row.get('query_id')!r}; training needs a moment."
        )
    timestamps = _as_seconds_array(query_row["timestamps"], "query_row['timestamps']")
    if timestamps.shape != (2,):
        raise ValueError(
            f"`query_row['timestamps']` must be one [start, end] pair of seconds, got shape {timestamps.shape} for "
            f"query {query_row.get('query_id')!r} (a query with several moments is one row per moment)."
        )
    video_id = query_row["video_id"]
    num_frames = feature_store.num_frames(video_id)
    if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, (bool, np.bool_)) or num_frames < 1:
        raise ValueError(
            f"`feature_store.num_frames({video_id!r})` must return a positive integer, got {num_frames!r}."
        )
    sample = sample_training_windows(
        timestamps,
        int(num_frames),
        rng,
        max_window_frames=max_window_frames,
        window_stride=window_stride,
        seconds_per_frame=seconds_per_frame,
        num_saliency_pairs=num_saliency_pairs,
    )

    def read(offset: int, length: int, what: str) -> np.ndarray:
        frames = np.asarray(feature_store.read_frames(video_id, offset, offset + length), dtype=np.float32)
        if frames.ndim != 2 or frames.shape[0] != length:
            raise ValueError(
                f"`feature_store.read_frames({video_id!r}, {offset}, {offset + length})` returned shape "
                f"{frames.shape} for the {what} window; expected ({length}, Dv)."
            )
        return frames

    offset, length = int(sample.window_offset[0]), int(sample.window_length[0])
    positive_features = read(offset, length, "positive")
    negative_window = int(sample.negative_window[0])
    negative_features = None
    if read_negative_window and negative_window >= 0:
        negative_features = read(
            int(sample.negative_window_offset[0]), int(sample.negative_window_length[0]), "negative"
        )
    example = {
        "query_id": query_row.get("query_id"),
        "video_id": video_id,
        "video_features": positive_features,
        "negative_video_features": negative_features,
        "span": sample.span[0],
        "saliency_positive_frames": sample.saliency_positive_frames[0],
        "saliency_negative_frames": sample.saliency_negative_frames[0],
        "positive_window": int(sample.positive_window[0]),
        "window_offset": offset,
        "negative_window": negative_window,
    }
    if query_row.get("text_features") is not None:
        example["text_features"] = np.asarray(query_row["text_features"], dtype=np.float32)
    else:
        example["query"] = query_row.get("query")
    return example


# ---- Post-processing (spec §7, §7.4, §7.5) ----


def round_to_4_decimals(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Round float32 values to 4 decimals on their double value, exactly like Python's `round(x, 4)` (spec §7.5).

    For a float32 input, `x · 10⁴` is exact in float64 (24 + 14 bits < 53), so `rint` then a correctly rounded
    division gives the double nearest to the decimal result, which is what `round(x, 4)` returns.

    Args:
        values (`torch.Tensor` or `np.ndarray`): float32 values.

    Returns:
        `np.ndarray` float64 of the same shape.
    """
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return np.round(array.astype(np.float64), 4)


def query_window_scores(window_logits: torch.Tensor) -> torch.Tensor:
    """Window scores `σ(ρ)` in float32 of each query's row of `(Nq, W)` logits, computed row by row: PyTorch's CPU
    sigmoid can differ by an ulp between its vectorised and scalar paths, which depend on an element's position in
    the tensor, so one call over all rows could rank exactly tied windows unlike the query's own call."""
    return torch.stack([torch.sigmoid(row.contiguous()) for row in window_logits.float()])


def rank_windows(window_scores: torch.Tensor) -> torch.Tensor:
    """Window ranking: scores descending, exact ties broken by ascending window index (spec §7.5).

    Args:
        window_scores (`torch.Tensor` of shape `(W,)`, or `(Nq, W)` for a row per query): `σ(ρ)`.

    Returns:
        `torch.LongTensor` of the same shape: window ids, best first (per row).
    """
    return torch.sort(window_scores, descending=True, stable=True).indices


def normalize_sentence_embeddings(sentence_embeddings: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as the matching score uses them: first `x/(‖x‖ + 1e-5)` as the loader does, then exactly
    L2-normalised (`x / max(‖x‖, 1e-12)`), in float32, along the last dimension."""
    query = l2_normalize_text_features(sentence_embeddings.float())
    return query / query.norm(dim=-1, keepdim=True).clamp_min(FRAME_NORM_EPS)


def frame_query_similarities(video_features: torch.Tensor, sentence_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every frame with every query: one matrix product for all queries of a video.

    Frames (`x / max(‖x‖, 1e-12)`) are normalised and the products accumulated in float64, then rounded to float32
    once, so a query's column does not depend on which other queries share the product or on the device that
    computed it (a float32 product's summation order changes with the number of columns and between CPU and GPU
    kernels). It runs on the device of `video_features`, except on MPS (no float64 there), where it runs on the CPU.

    Args:
        video_features (`torch.Tensor` of shape `(T, Dv)`): Raw frame features.
        sentence_embeddings (`torch.Tensor` of shape `(Nq, Dc)` or `(Dc,)`): Sentence embeddings, `Dc == Dv`.

    Returns:
        `torch.FloatTensor` of shape `(T, Nq)`, or `(T,)` for a single `(Dc,)` embedding.
    """
    if video_features.ndim != 2 or sentence_embeddings.ndim not in (1, 2):
        raise ValueError(
            f"`video_features` must have shape (T, Dv) and `sentence_embeddings` (Nq, Dv) or (Dv,); got "
            f"{tuple(video_features.shape)} and {tuple(sentence_embeddings.shape)}."
        )
    if sentence_embeddings.shape[-1] != video_features.shape[-1]:
        raise ValueError(
            f"`sentence_embeddings` must live in the video feature space: width {video_features.shape[-1]} like "
            f"`video_features`, got {sentence_embeddings.shape[-1]}."
        )
    if video_features.device.type == "mps":
        video_features = video_features.cpu()
    frames = video_features.float().double()  # float32 values, float64 arithmetic
    frames = frames / frames.norm(dim=-1, keepdim=True).clamp_min(FRAME_NORM_EPS)
    queries = normalize_sentence_embeddings(sentence_embeddings.to(frames.device)).double()
    return (frames @ (queries.T if queries.ndim == 2 else queries)).float()


def _span_top_k_sum(
    cosine: torch.Tensor,
    window_offsets: torch.Tensor,
    window_lengths: torch.Tensor,
    frame_starts: torch.Tensor,
    frame_ends: torch.Tensor,
    top_k_frames: int,
) -> torch.Tensor:
    """Sum of the `min(#frames, k)` largest `cosine` values inside each span's frames, best first; 0 for an empty span.

    One query: `cosine` `(T,)`, windows `(K,)`, spans `(K, Q)`. Several queries of one video at once: `cosine`
    `(T, Nq)` (a column per query), windows `(Nq, K)`, spans `(Nq, K, Q)`; each query's sums are bit for bit those of
    its own call (its `k` is `min(k, its longest window)`, so queries are summed in groups of equal `k`). It runs on
    the host (numpy), in `cosine`'s precision (float32 for half-precision input); the result is a CPU tensor.

    Each span's `k` best values are taken from a row of candidates, `-inf` where a candidate is not in the span: the
    span's own frames when spans are short (a trained model's), else ([`_span_block_candidates`]) the frames of its
    partial first and last blocks of a window cut into blocks of `B` frames, and the `k` best of each block wholly
    inside it: about `2B + k·Lv/B` candidates instead of the window's `Lv` frames (149 for MAD's 900 and `k = 3`).
    Either way the row holds the span's `k` best values, sorted they come in the same order, and the sum adds them
    best first, so both give the same bits.
    """
    if cosine.ndim == 1:
        sums = _span_top_k_sum(
            cosine[:, None],
            window_offsets[None],
            window_lengths[None],
            frame_starts[None],
            frame_ends[None],
            top_k_frames,
        )
        return sums[0]
    cosine = cosine.detach().cpu()
    values = (cosine if cosine.dtype in (torch.float32, torch.float64) else cosine.float()).numpy()
    window_offsets, window_lengths = window_offsets.cpu().numpy(), window_lengths.cpu().numpy()
    frame_starts = np.maximum(frame_starts.cpu().numpy(), 0)  # a NaN span's bounds come as the most negative integer
    span_lengths = np.maximum(frame_ends.cpu().numpy() - frame_starts, 0)  # (Nq, K, Q)
    sums = np.zeros(frame_starts.shape, values.dtype)
    if frame_starts.size == 0:
        return torch.from_numpy(sums)
    longest = window_lengths.max(axis=1)  # (Nq,)
    counts = np.minimum(longest, top_k_frames)  # each query's k
    for count in np.unique(counts).tolist():  # one group in practice (windows longer than k)
        if count < 1:  # empty windows (or k = 0): nothing to add
            continue
        queries = np.flatnonzero(counts == count)
        columns, offsets = queries[:, None, None, None], window_offsets[queries, :, None, None]  # (n, K, 1, 1)
        starts, lengths = frame_starts[queries, ..., None], span_lengths[queries, ..., None]  # (n, K, Q, 1)
        window_width = int(longest[queries].max())
        span_width = max(count, int(lengths.max()))  # at least k candidates per row
        block = max(count, math.ceil(math.sqrt(count * window_width / 2)))  # minimises 2B + k·Lv/B
        if span_width <= 2 * block + math.ceil(window_width / block) * count:  # each span's own frames
            candidates = _span_frame_values(values, offsets, columns, starts, starts + lengths, span_width)
        else:
            candidates = _span_block_candidates(values, offsets, columns, starts, lengths, window_width, block, count)
        best = np.sort(candidates, axis=-1)[..., -count:]  # the k best, last is largest
        total = sums[queries]
        for rank in range(1, count + 1):  # best first, the order of a query's own call
            value = best[..., -rank]
            total += np.where(np.isfinite(value), value, 0)
        sums[queries] = total
    return torch.from_numpy(sums)


def _span_frame_values(
    values: np.ndarray, offsets: np.ndarray, columns: np.ndarray, first: np.ndarray, stop: np.ndarray, width: int
) -> np.ndarray:
    """`values` `(T, Nq)` at the window-relative frames `first … first + width - 1` (`first`, `stop`: `(n, K, Q, 1)`)
    of the windows starting at `offsets` `(n, K, 1, 1)`, in the queries' `columns` `(n, 1, 1, 1)`, `-inf` from `stop`
    on: shape `(n, K, Q, width)`. Frames past the video read its last frame."""
    frames = first + np.arange(width)
    return np.where(frames < stop, values[np.minimum(offsets + frames, len(values) - 1), columns], -np.inf)


def _span_block_candidates(
    values: np.ndarray,
    offsets: np.ndarray,
    columns: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    window_width: int,
    block: int,
    count: int,
) -> np.ndarray:
    """Candidate rows `(n, K, Q, 2B + k·⌈Lv/B⌉)` holding each span's `k` best frames, `-inf` elsewhere.

    A window's `Lv` frames are cut into blocks of `B`; a span `[s, e)` is its frames before its first whole block
    (`[s, min(e, ⌈s/B⌉B))`), its whole blocks (`⌈s/B⌉ ≤ b < ⌊e/B⌋`, through their `k` best frames) and its frames
    after them (up to `e`): disjoint parts that cover the span, so the `k` best candidates are its `k` best frames.

    Args:
        values (`np.ndarray` of shape `(T, Nq)`): `cosine`. offsets, columns: the group's windows and queries (see
            [`_span_frame_values`]).
        starts, lengths (`np.ndarray` of shape `(n, K, Q, 1)`): window-relative spans inside their window's valid
            frames.
        window_width (`int`): `Lv`, the longest window. block (`int`): `B ≥ k`. count (`int`): `k`.
    """
    num_blocks = math.ceil(window_width / block)
    # Every window's `nB·B` frames through a sliding view of the video, padded past its end, instead of an index per
    # frame. Frames past a window's valid ones may be anything: a block holding one is wholly inside no span.
    padded = np.concatenate([values, np.full((num_blocks * block, values.shape[1]), -np.inf, values.dtype)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, num_blocks * block, axis=0)
    frames = frames[offsets[..., 0, 0], columns[..., 0, 0]]  # (n, K, nB·B)
    block_best = np.sort(frames.reshape(*frames.shape[:2], num_blocks, block), axis=-1)[..., -count:]  # (n, K, nB, k)
    ends = starts + lengths
    first_block, end_block = -(-starts // block), ends // block  # the whole blocks: [first, end)
    head_end = np.minimum(ends, first_block * block)
    tail_start = np.maximum(head_end, end_block * block)
    parts = [
        _span_frame_values(values, offsets, columns, first, stop, block)  # (n, K, Q, B)
        for first, stop in ((starts, head_end), (tail_start, ends))  # the partial blocks at either end
    ]
    block_ids = np.arange(num_blocks)[:, None]
    whole = (block_ids >= first_block[..., None]) & (block_ids < end_block[..., None])  # (n, K, Q, nB, 1)
    parts.append(np.where(whole, block_best[:, :, None], -np.inf).reshape(*whole.shape[:3], num_blocks * count))
    return np.concatenate(parts, axis=-1)


def matching_scores(
    video_features: torch.Tensor,
    sentence_embedding: torch.Tensor,
    window_offsets: torch.Tensor,
    window_lengths: torch.Tensor,
    frame_starts: torch.Tensor,
    frame_ends: torch.Tensor,
    top_k_frames: int,
) -> torch.Tensor:
    """Matching score of spec §7.4: sum of the `min(#frames, k)` best cosine similarities in each span's frames.

    Frames and the sentence embedding are L2-normalised (the sentence embedding first as the loader does,
    `x/(‖x‖ + 1e-5)`, then exactly). The frame ranges must already be clipped to the window's valid frames, which is
    where this differs from the original (whose padded frames gave NaN, spec §7.4). An empty range scores 0.

    Args:
        video_features (`torch.Tensor` of shape `(T, Dv)`): The video's raw frame features.
        sentence_embedding (`torch.Tensor` of shape `(Dc,)`): The query's sentence embedding, `Dc == Dv`.
        window_offsets (`torch.LongTensor` of shape `(K,)`): First frame of each window.
        window_lengths (`torch.LongTensor` of shape `(K,)`): Valid length of each window.
        frame_starts (`torch.LongTensor` of shape `(K, Q)`): First frame of each span, window-relative, `≥ 0`.
        frame_ends (`torch.LongTensor` of shape `(K, Q)`): End frame (exclusive), window-relative, `≤ n`.
        top_k_frames (`int`): `k`.

    Returns:
        `torch.FloatTensor` of shape `(K, Q)`.
    """
    cosine = frame_query_similarities(video_features, sentence_embedding)  # (T,)
    return _span_top_k_sum(cosine, window_offsets, window_lengths, frame_starts, frame_ends, top_k_frames)


def min_max_normalize(values: np.ndarray) -> np.ndarray:
    """Min-max normalise in float64 along the last axis (each row of a 2-D array on its own); a list whose values are
    all equal is returned unchanged (spec §7 step 7)."""
    if values.shape[-1] == 0:  # nothing to normalise (the min and max of no value are undefined)
        return values.astype(np.float64)
    low, high = values.min(axis=-1, keepdims=True), values.max(axis=-1, keepdims=True)
    constant = high == low
    return np.where(constant, values, (values - low) / np.where(constant, 1.0, high - low))


def merge_identical_spans(spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group rows with identical `(start, end)`: first position, last occurrence's values (spec §7.5).

    Args:
        spans (`np.ndarray` of shape `(P, 2)`): Candidate `(start, end)` in pool order.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: for each distinct span in order of first appearance, the index of its first
        and of its last occurrence (`(M,)` each, int64).
    """
    if len(spans) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(spans)), spans[:, 1], spans[:, 0]))  # by start, end, then position
    ordered = spans[order]
    new_group = np.ones(len(spans), dtype=bool)
    new_group[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group_starts = np.flatnonzero(new_group)
    group_ends = np.append(group_starts[1:], len(spans)) - 1
    first, last = order[group_starts], order[group_ends]
    by_position = np.argsort(first, kind="stable")
    return first[by_position], last[by_position]


def _left_align(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each row's `True` entries of an `(N, L)` mask, in order, padded with 0 to the longest row.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: positions `(N, K)` int64 and which of them are valid `(N, K)` bool.
    """
    counts = mask.sum(axis=1)
    positions = np.argsort(~mask, axis=1, kind="stable")[:, : counts.max(initial=0)]  # a stable sort keeps the order
    valid = np.arange(positions.shape[1]) < counts[:, None]
    return np.where(valid, positions, 0), valid


def batched_merge_identical_spans(spans: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[`merge_identical_spans`] of many pools at once (e.g. all queries of a video), bit for bit.

    Args:
        spans (`np.ndarray` of shape `(N, P, 2)`): Each pool's candidate `(start, end)` in pool order.

    Returns:
        `tuple(np.ndarray, np.ndarray, np.ndarray)`: `first` and `last` `(N, M)` int64 and `valid` `(N, M)` bool,
        `M` the most distinct spans in a pool: the valid entries of row `n` are `merge_identical_spans(spans[n])`,
        followed by padding (0, not valid).
    """
    num_pools, pool_size = spans.shape[:2]
    positions = np.broadcast_to(np.arange(pool_size), (num_pools, pool_size))
    order = np.lexsort((positions, spans[..., 1], spans[..., 0]), axis=-1)  # per pool: by start, end, then position
    pool = np.arange(num_pools)[:, None]
    ordered = spans[pool, order]
    new_group = np.ones((num_pools, pool_size), dtype=bool)
    new_group[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).any(axis=-1)
    # Identical spans are runs of the sorted order, from their first occurrence to their last. Flattened, every
    # pool starts with a run, so each run ends just before the next one starts.
    run_starts = np.flatnonzero(new_group)
    run_ends = np.empty_like(run_starts)
    run_ends[:-1] = run_starts[1:] - 1
    run_ends[-1:] = new_group.size - 1
    first_occurrence = (order + pool * pool_size).ravel()[run_starts]  # in the flattened pools
    is_first = np.zeros(new_group.size, dtype=bool)
    is_first[first_occurrence] = True
    last_of_first = np.zeros(new_group.size, dtype=np.int64)
    last_of_first[first_occurrence] = order.ravel()[run_ends]
    first, valid = _left_align(is_first.reshape(num_pools, pool_size))  # distinct spans by first position
    return first, np.where(valid, last_of_first.reshape(num_pools, pool_size)[pool, first], 0), valid


def temporal_iou_matrix(spans: np.ndarray) -> np.ndarray:
    """Pairwise temporal IoU as intersection over hull, in exactly that form (spec §7.5); 0 where the hull is 0.

    Args:
        spans (`np.ndarray` of shape `(M, 2)`, float64): `(start, end)`.

    Returns:
        `np.ndarray` of shape `(M, M)`, float64.
    """
    start, end = spans[:, 0], spans[:, 1]
    intersection = np.maximum(0.0, np.minimum(end[:, None], end[None, :]) - np.maximum(start[:, None], start[None, :]))
    hull = np.maximum(end[:, None], end[None, :]) - np.minimum(start[:, None], start[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hull == 0, 0.0, intersection / np.where(hull == 0, 1.0, hull))


def temporal_nms(spans: np.ndarray, threshold: float, max_keep: int) -> np.ndarray:
    """Greedy temporal NMS over candidates already in rank order (spec §7 step 8).

    Keeps the best remaining candidate, discards the remaining ones whose IoU with it is strictly greater than
    `threshold`, repeats, and stops after `max_keep` kept. The IoU matrix is computed at once; the greedy pass is a
    loop over at most `max_candidates_before_nms` rows.

    Args:
        spans (`np.ndarray` of shape `(M, 2)`): `(start, end)` in rank order.
        threshold (`float`): IoU above which a candidate is suppressed.
        max_keep (`int`): Most candidates kept.

    Returns:
        `np.ndarray` of shape `(K,)`, int64: kept row indices in rank order.
    """
    max_keep = _check_positive_int(max_keep, "max_keep")
    suppressed_by = temporal_iou_matrix(spans) > threshold  # (M, M)
    suppressed = np.zeros(len(spans), dtype=bool)
    kept = []
    for row in range(len(spans)):
        if suppressed[row]:
            continue
        kept.append(row)
        if len(kept) == max_keep:
            break
        suppressed |= suppressed_by[row]
    return np.asarray(kept, dtype=np.int64)


# Most pairs in one block of the batched NMS's IoU rows: its float64 temporaries (512 KiB) stay in the CPU cache.
_NMS_BLOCK_PAIRS = 1 << 16


def _iou_above(start: torch.Tensor, end: torch.Tensor, ranks: slice, threshold: float) -> np.ndarray:
    """Whether each candidate of `ranks` suppresses each candidate from `ranks.start` on, in every list: for
    `(M, N)` starts and ends (a column per list), the `(B, M - ranks.start, N)` array of
    `temporal_iou_matrix(list's spans)[ranks, ranks.start:] > threshold`, with the same float operations (PyTorch's
    broadcasting kernels are a few times faster than NumPy's here).

    A zero hull gives `0 / 0 = NaN` here (its intersection is 0 too), which is not above any threshold, while
    [`temporal_iou_matrix`] makes that IoU 0, above negative thresholds only.
    """
    row_start, row_end = start[ranks, None], end[ranks, None]
    column_start, column_end = start[None, ranks.start :], end[None, ranks.start :]
    intersection = torch.minimum(row_end, column_end)
    intersection -= torch.maximum(row_start, column_start)
    intersection.clamp_min_(0.0)  # keeps NaN, like `np.maximum(0.0, ·)`
    hull = torch.maximum(row_end, column_end)
    hull -= torch.minimum(row_start, column_start)
    above = intersection.div_(hull).numpy() > threshold
    if threshold < 0:
        above |= hull.numpy() == 0
    return above


def batched_temporal_nms(
    spans: np.ndarray, valid: np.ndarray, threshold: float, max_keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """[`temporal_nms`] of many candidate lists at once (e.g. all queries of a video), bit for bit.

    Row `n` keeps the candidates `temporal_nms(spans[n][valid[n]], threshold, max_keep)` keeps; candidates that are
    not valid (padding of shorter lists) are never kept and suppress nothing. The greedy pass is one loop over rank
    positions, vectorised across rows. A candidate's IoU is computed only with the candidates ranked after it, for
    a block of rank positions at a time, and the loop stops once every row has kept `max_keep` or has no candidate
    left.

    Args:
        spans (`np.ndarray` of shape `(N, M, 2)`): `(start, end)` of each row's candidates in rank order, float32
            or float64 (other dtypes are computed in float64, where `temporal_nms` would compute in theirs).
        valid (`np.ndarray` of shape `(N, M)`, bool): Which candidates take part.
        threshold (`float`): IoU above which a candidate is suppressed.
        max_keep (`int`): Most candidates kept per row (≥ 1).

    Returns:
        `tuple(np.ndarray, np.ndarray)`: `kept` `(N, K)` int64, each row's kept positions in rank order (padded
        with 0 after its first `num_kept[n]`), and `num_kept` `(N,)` int64; `K` is the largest `num_kept`.
    """
    max_keep = _check_positive_int(max_keep, "max_keep")
    spans, valid = np.asarray(spans), np.asarray(valid, dtype=bool)
    if spans.shape != (*valid.shape, 2):
        raise ValueError(f"`spans` must have shape {(*valid.shape, 2)} like `valid`, got {spans.shape}.")
    num_rows, num_candidates = valid.shape
    if spans.dtype not in (np.float32, np.float64):
        spans = spans.astype(np.float64)
    # Candidate-major `(M, N)`: a rank step updates one contiguous block of all rows' later candidates.
    start, end = (torch.from_numpy(np.ascontiguousarray(spans[..., side].T)) for side in (0, 1))
    # Not suppressed so far; a rank's flags are final once the loop has passed it, so this ends as the kept ones.
    alive = valid.T.copy()
    block = max(1, _NMS_BLOCK_PAIRS // max(1, num_rows * num_candidates))
    kept_by_all = 0  # ranks every row kept: once `max_keep`, no row keeps more (a free check, exact for one row)
    for rank in range(num_candidates - 1):  # the last candidate suppresses nothing
        row_in_block = rank % block
        if row_in_block == 0:
            # Every row done: `max_keep` kept, or no candidate left.
            if ((alive[:rank].sum(axis=0) >= max_keep) | ~alive[rank:].any(axis=0)).all():
                break
            # (block, M - rank, N): later candidates that the block's candidates, if kept, leave alive.
            spared = ~_iou_above(start, end, slice(rank, rank + block), threshold)
        keep = alive[rank]  # not among the later candidates updated below
        num_keeping = np.count_nonzero(keep)
        if num_keeping:
            later, spared_later = alive[rank + 1 :], spared[row_in_block, row_in_block + 1 :]
            if num_keeping == num_rows:  # no mask needed
                kept_by_all += 1
                if kept_by_all == max_keep:
                    break
                later &= spared_later
            else:
                later &= spared_later | ~keep
    alive = alive.T
    # Greedy NMS stopped at `max_keep` keeps the first `max_keep` of the unbounded pass.
    kept, kept_valid = _left_align(alive & (np.cumsum(alive, axis=1) <= max_keep))
    return kept, kept_valid.sum(axis=1)


@contextmanager
def single_intra_op_thread() -> Iterator[None]:
    """Run PyTorch CPU operators on one thread inside the block, restoring the thread count after it.

    Post-processing applies dozens of operators to tensors of a few hundred elements per query: waking the intra-op
    thread pool costs more than the work (a 21-window query on 2 busy cores: 8.5 ms with 2 threads, 0.85 ms with one).
    The results are those of a single-threaded run whatever the machine's thread count.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rank_and_suppress(
    rows: np.ndarray, valid: np.ndarray, score_columns: list[int], settings: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's `rows` kept, best first, ranking by each score column in turn: stable sort by the score, cut,
    then NMS, for all queries and score columns in one [`batched_temporal_nms`].

    Args:
        rows (`np.ndarray` of shape `(Nq, M, 5)`): Merged candidates `[start_s, end_s, proposal, match, fusion]`.
        valid (`np.ndarray` of shape `(Nq, M)`, bool): Which rows are candidates (the rest is padding).
        score_columns (`list[int]`): Columns of `rows` to rank by.

    Returns:
        `tuple(np.ndarray, np.ndarray)`: `kept` `(len(score_columns), Nq, K)` int64, indices into `rows[query]`
        (padded with 0), and `num_kept` `(len(score_columns), Nq)` int64.
    """
    num_queries = len(rows)
    # Padding sorts as NaN after every candidate, NaN scores included: a stable sort keeps NaNs in position order.
    negated = np.where(valid[..., None], -rows[..., score_columns], np.nan)  # (Nq, M, S)
    negated = negated.transpose(2, 0, 1).reshape(-1, rows.shape[1])  # (S·Nq, M), score column major
    order = np.argsort(negated, axis=1, kind="stable")[:, : settings["max_candidates_before_nms"]]
    query = np.tile(np.arange(num_queries), len(score_columns))[:, None]
    kept, num_kept = batched_temporal_nms(
        rows[query, order, :2], valid[query, order], settings["nms_threshold"], settings["max_predictions"]
    )
    kept = order[np.arange(len(order))[:, None], kept]
    return kept.reshape(len(score_columns), num_queries, -1), num_kept.reshape(len(score_columns), num_queries)


def _check_post_processing_settings(
    *, top_k_windows, nms_threshold, max_candidates_before_nms, max_predictions, matching_top_k_frames
) -> dict[str, Any]:
    """The post-processing counts and NMS threshold, checked (each error names its argument), as a dict."""
    settings = {
        name: _check_positive_int(value, name)
        for name, value in (
            ("top_k_windows", top_k_windows),
            ("max_candidates_before_nms", max_candidates_before_nms),
            ("max_predictions", max_predictions),
            ("matching_top_k_frames", matching_top_k_frames),
        )
    }
    return {**settings, "nms_threshold": _check_nms_threshold(nms_threshold)}


def _cpu_tensor(value: Any, name: str) -> torch.Tensor:
    """A model output (tensor on any device, or array) as a CPU tensor; a ValueError naming `name` otherwise."""
    try:
        return torch.as_tensor(value).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"`{name}` must be a tensor or an array of numbers, got {type(value).__name__}.") from error


def post_process_query(
    logits: torch.Tensor,
    pred_spans: torch.Tensor,
    window_logits: torch.Tensor,
    window_offsets: np.ndarray,
    window_lengths: np.ndarray,
    video_features: torch.Tensor | None,
    sentence_embedding: torch.Tensor | None,
    *,
    seconds_per_frame: float,
    top_k_windows: int,
    nms_threshold: float,
    max_candidates_before_nms: int,
    max_predictions: int,
    matching_top_k_frames: int,
    scale_matching_by_window_score: bool,
    window_ranking: torch.Tensor | None = None,
    return_candidates: bool = False,
    return_single_score_rankings: bool = False,
    frame_similarities: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Spec §7 steps 3-8 for one query over all windows of its video, vectorised across windows and slots (a one-query
    call of [`post_process_queries`], after checking the inputs).

    Args:
        logits (`torch.Tensor` of shape `(W, Q, 2)`): Class logits per window and slot (foreground = 0).
        pred_spans (`torch.Tensor` of shape `(W, Q, 2)`): `(center, width)` normalised by the window's valid length.
        window_logits (`torch.Tensor` of shape `(W,)` or `(W, 1)`): Retrieval logits `ρ`.
        window_offsets (`np.ndarray` of shape `(W,)`): First frame `w0` of each window.
        window_lengths (`np.ndarray` of shape `(W,)`): Valid length `n` of each window.
        video_features (`torch.Tensor` of shape `(T, Dv)`): The video's raw frame features (matching score); may be
            `None` when `frame_similarities` is given.
        sentence_embedding (`torch.Tensor` of shape `(Dc,)`): The query's sentence embedding (raw or normalised); may
            be `None` when `frame_similarities` is given.
        seconds_per_frame (`float`): `δ`.
        top_k_windows (`int`): Windows whose proposals are pooled.
        nms_threshold (`float`): NMS suppresses IoU strictly above this.
        max_candidates_before_nms (`int`): Ranked candidates entering NMS.
        max_predictions (`int`): Most moments returned.
        matching_top_k_frames (`int`): `k` of the matching score.
        scale_matching_by_window_score (`bool`): Multiply the matching score by `σ(ρ)` (Ego4D).
        window_ranking (`torch.LongTensor` of shape `(W,)`, *optional*): Use this window order instead of ranking by
            score (e.g. to replay another implementation's order of exactly tied windows).
        return_candidates (`bool`, *optional*): Also return the pooled candidates.
        return_single_score_rankings (`bool`, *optional*): Also return the rankings by proposal score only and by
            matching score only (spec §7.5).
        frame_similarities (`torch.Tensor` of shape `(T,)`, *optional*): This query's column of
            [`frame_query_similarities`], computed for all queries of a video at once; replaces `video_features` and
            `sentence_embedding`.

    Returns:
        `dict[str, torch.Tensor]` with `predictions` `(K, 5)` float64 rows `[start_s, end_s, proposal, match,
        fusion]` ranked; `spans` `(K, 2)`, `scores` (fusion), `proposal_scores`, `matching_scores` `(K,)` (views of
        `predictions`); `prediction_sources` `(K, 2)` int64 `[window, slot]`: the window id and decoder slot (moment
        query) each prediction comes from (for a span several candidates share, the one whose scores it carries);
        `window_ranking` `(W,)` int64 and `window_scores` `(W,)` float32 (`σ(ρ)` in rank order);
        optionally `candidates` `(P, 5)` float64 rows `[window, start_s, end_s, proposal, match]` in pool order, and
        `proposal_only` / `matching_only` `(K', 5)` in the `predictions` format.
    """
    if frame_similarities is None:
        if video_features is None or sentence_embedding is None:
            raise ValueError("`video_features` and `sentence_embedding` are needed when `frame_similarities` is None.")
        frame_similarities = frame_query_similarities(video_features, sentence_embedding)
    frame_similarities = _as_float_tensor(frame_similarities, "frame_similarities")  # on the CPU, finite
    if frame_similarities.ndim != 1:
        raise ValueError(
            f"`frame_similarities` must be one query's cosines for every frame, shape (T,), got "
            f"{tuple(frame_similarities.shape)}."
        )
    (result,) = post_process_queries(
        _cpu_tensor(logits, "logits")[None],
        _cpu_tensor(pred_spans, "pred_spans")[None],
        _cpu_tensor(window_logits, "window_logits").reshape(1, -1),
        window_offsets,
        window_lengths,
        frame_similarities[:, None],
        seconds_per_frame=seconds_per_frame,
        top_k_windows=top_k_windows,
        nms_threshold=nms_threshold,
        max_candidates_before_nms=max_candidates_before_nms,
        max_predictions=max_predictions,
        matching_top_k_frames=matching_top_k_frames,
        scale_matching_by_window_score=scale_matching_by_window_score,
        window_rankings=None
        if window_ranking is None
        else _cpu_tensor(window_ranking, "window_ranking").reshape(1, -1),
        return_candidates=return_candidates,
        return_single_score_rankings=return_single_score_rankings,
    )
    return result


def post_process_queries(
    logits: torch.Tensor,
    pred_spans: torch.Tensor,
    window_logits: torch.Tensor,
    window_offsets: np.ndarray,
    window_lengths: np.ndarray,
    frame_similarities: torch.Tensor,
    *,
    seconds_per_frame: float,
    top_k_windows: int,
    nms_threshold: float,
    max_candidates_before_nms: int,
    max_predictions: int,
    matching_top_k_frames: int,
    scale_matching_by_window_score: bool,
    window_rankings: torch.Tensor | None = None,
    return_candidates: bool = False,
    return_single_score_rankings: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """[`post_process_query`] for `Nq` queries over the same windows of one video, vectorised across queries too.

    Window ranking, proposal scores, seconds, matching scores, the merge of identical spans, the ranking and the
    greedy NMS ([`batched_temporal_nms`]) run once for all queries. Each query's result is bit for bit that of its own
    [`post_process_query`] call, whatever the other queries are.

    Args:
        logits, pred_spans (`torch.Tensor` of shape `(Nq, W, Q, 2)`), window_logits (`(Nq, W)`): CPU tensors.
        window_offsets, window_lengths (`np.ndarray` of shape `(W,)`): the windows.
        frame_similarities (`torch.Tensor` of shape `(T, Nq)`): [`frame_query_similarities`] of the queries.
        window_rankings (`torch.LongTensor` of shape `(Nq, W)`, *optional*): each query's window order to use
            (permutations of the window ids) instead of ranking by score.
        Other arguments: see [`post_process_query`].

    Returns:
        `list[dict[str, torch.Tensor]]`: one dict per query, as [`post_process_query`] returns.
    """
    settings = _check_post_processing_settings(
        top_k_windows=top_k_windows,
        nms_threshold=nms_threshold,
        max_candidates_before_nms=max_candidates_before_nms,
        max_predictions=max_predictions,
        matching_top_k_frames=matching_top_k_frames,
    )
    delta = torch.tensor(_check_seconds_per_frame(seconds_per_frame), dtype=torch.float32)
    for name, flag in (
        ("scale_matching_by_window_score", scale_matching_by_window_score),
        ("return_candidates", return_candidates),
        ("return_single_score_rankings", return_single_score_rankings),
    ):
        _check_bool(flag, name)
    logits, pred_spans = _cpu_tensor(logits, "logits"), _cpu_tensor(pred_spans, "pred_spans")
    window_logits = _cpu_tensor(window_logits, "window_logits")
    frame_similarities = _cpu_tensor(frame_similarities, "frame_similarities")
    if window_logits.ndim != 2 or not _all_finite(window_logits):
        raise ValueError(
            f"`window_logits` must be finite retrieval logits of shape (Nq, W), got {tuple(window_logits.shape)}"
            f"{'' if window_logits.ndim != 2 else ' with NaN or infinite values'}."
        )
    num_queries, num_windows = window_logits.shape
    if frame_similarities.ndim != 2 or frame_similarities.shape[1] != num_queries:
        raise ValueError(
            f"`frame_similarities` must be the queries' cosines for every frame, shape (T, {num_queries}), got "
            f"{tuple(frame_similarities.shape)}."
        )
    # The windows must lie inside the T frames the similarities cover.
    window_offsets, window_lengths = _check_window_layout(
        window_offsets,
        window_lengths,
        frame_similarities.shape[0],
        "post-processing (T = rows of `frame_similarities`)",
    )
    if len(window_offsets) != num_windows:
        raise ValueError(
            f"`window_offsets` and `window_lengths` must describe the {num_windows} windows of `window_logits`, got "
            f"{len(window_offsets)}."
        )
    if logits.shape[:2] != (num_queries, num_windows) or logits.shape[-1:] != (2,) or pred_spans.shape != logits.shape:
        raise ValueError(
            f"`logits` and `pred_spans` must have shape ({num_queries}, {num_windows}, Q, 2) like `window_logits` "
            f"({num_queries}, {num_windows}), got {tuple(logits.shape)} and {tuple(pred_spans.shape)}."
        )
    if window_rankings is not None:
        window_rankings = _cpu_tensor(window_rankings, "window_rankings").long()
        if window_rankings.shape != (num_queries, num_windows) or not torch.equal(
            torch.sort(window_rankings, dim=1).values, torch.arange(num_windows).expand(num_queries, -1)
        ):
            raise ValueError(f"`window_ranking` must be a permutation of the {num_windows} window ids (per query).")
    window_scores = query_window_scores(window_logits)  # (Nq, W)
    if window_rankings is None:
        window_rankings = rank_windows(window_scores)
    kept = window_rankings[:, : settings["top_k_windows"]]  # (Nq, Kw)
    kept_scores = window_scores.gather(1, kept)  # (Nq, Kw)
    offsets = torch.from_numpy(window_offsets)[kept]
    lengths = torch.from_numpy(window_lengths)[kept]
    query_rows = torch.arange(num_queries)[:, None]
    # Only the kept windows' moments are read: the others may be NaN (not grounded, `top_k_windows` inference).
    for name, value in (("logits", logits), ("pred_spans", pred_spans)):
        if not _all_finite(value[query_rows, kept]):
            raise ValueError(f"`{name}` contains NaN or infinite values in the windows kept (`top_k_windows`).")

    # Proposal score and slot order (spec §7 step 4, §7.5: slots by proposal, descending, stable).
    proposals = logits[query_rows, kept].float().softmax(dim=-1)[..., 0] * kept_scores[..., None]  # (Nq, Kw, Q)
    slot_order = torch.sort(proposals, dim=-1, descending=True, stable=True).indices  # (Nq, Kw, Q)
    proposals = proposals.gather(-1, slot_order)
    spans = pred_spans[query_rows, kept].float().gather(2, slot_order[..., None].expand(-1, -1, -1, 2))

    # Seconds in float32 in the exact order ((c ∓ w/2)·n + w0)·δ (spec §7.5).
    half_width = spans[..., 1] / 2
    start_fraction = spans[..., 0] - half_width  # (Nq, Kw, Q)
    end_fraction = spans[..., 0] + half_width
    lengths_f32 = lengths.to(torch.float32)[..., None]
    offsets_f32 = offsets.to(torch.float32)[..., None]
    start_frames = start_fraction * lengths_f32  # window-relative frames
    end_frames = end_fraction * lengths_f32
    start_seconds = (start_frames + offsets_f32) * delta
    end_seconds = (end_frames + offsets_f32) * delta

    # Matching score over the span's frames, clipped to the window's valid frames (spec §7.4, corrected).
    frame_starts = start_frames.floor().clamp_min(0).long()
    frame_ends = torch.minimum(end_frames.ceil().long(), lengths[..., None])
    matches = _span_top_k_sum(
        frame_similarities, offsets, lengths, frame_starts, frame_ends, settings["matching_top_k_frames"]
    )
    if scale_matching_by_window_score:
        matches = matches * kept_scores[..., None]

    # Pool in window-rank order, slots in proposal order; round on the double value (spec §7 step 6).
    pooled_windows = kept[..., None].expand_as(proposals).reshape(num_queries, -1).numpy().astype(np.float64)
    start_s = round_to_4_decimals(start_seconds.reshape(num_queries, -1))  # (Nq, P)
    end_s = round_to_4_decimals(end_seconds.reshape(num_queries, -1))
    proposal_r = round_to_4_decimals(proposals.reshape(num_queries, -1))
    match_r = round_to_4_decimals(matches.reshape(num_queries, -1))

    # Fusion over the whole pool before merging identical spans (spec §7 step 7, §7.5).
    fusion = min_max_normalize(proposal_r) + min_max_normalize(match_r)
    pools = np.stack([start_s, end_s, proposal_r, match_r, fusion], axis=-1)  # (Nq, P, 5)
    # Where each candidate comes from: its window and decoder slot.
    pool_sources = torch.stack([kept[..., None].expand_as(slot_order), slot_order], dim=-1).reshape(num_queries, -1, 2)

    sorted_scores = window_scores.gather(1, window_rankings)  # `σ(ρ)` in rank order
    # One row per distinct span, at its first position, with its last occurrence's values (padded per query).
    _, last, valid = batched_merge_identical_spans(pools[..., :2])
    merged = pools[np.arange(num_queries)[:, None], last]  # (Nq, M, 5)
    score_columns = [4, 2, 3] if return_single_score_rankings else [4]  # fusion, then proposal and matching only
    ranked, num_ranked = _rank_and_suppress(merged, valid, score_columns, settings)
    results = []
    for query in range(num_queries):  # slicing each query's rows out of the batched arrays
        rows = merged[query]
        best = ranked[0, query, : num_ranked[0, query]]
        predictions = torch.from_numpy(rows[best])
        result = {
            "predictions": predictions,
            "spans": predictions[:, :2],
            "scores": predictions[:, 4],
            "proposal_scores": predictions[:, 2],
            "matching_scores": predictions[:, 3],
            # The window and slot of the candidate whose values each prediction carries.
            "prediction_sources": pool_sources[query][torch.from_numpy(last[query, best])],
            "window_ranking": window_rankings[query].clone(),
            "window_scores": sorted_scores[query].clone(),
        }
        if return_candidates:
            result["candidates"] = torch.from_numpy(np.column_stack([pooled_windows[query], pools[query, :, :4]]))
        if return_single_score_rankings:
            for ranking, name in ((1, "proposal_only"), (2, "matching_only")):
                result[name] = torch.from_numpy(rows[ranked[ranking, query, : num_ranked[ranking, query]]])
        results.append(result)
    return results


# ---- Processor ----


def _check_nms_threshold(nms_threshold: Any) -> float:
    if not 0.0 <= _check_finite_number(nms_threshold, "nms_threshold") <= 1.0:
        raise ValueError(f"`nms_threshold` must be in [0, 1], got {nms_threshold!r}.")
    return float(nms_threshold)


def _check_index_array(value: Any, name: str, owner: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise ValueError(f"{owner} `{name}` must be a 1-D integer array, got {array.dtype} of shape {array.shape}.")
    return array.astype(np.int64, copy=False)


def _check_window_layout(
    window_offsets: Any, window_lengths: Any, num_frames: Any, owner: str
) -> tuple[np.ndarray, np.ndarray]:
    """The windows `[w0, w0 + n)` of `owner` as int64 arrays, checked to be non-empty and inside the `T` frames:
    post-processing would otherwise turn them into negative or NaN seconds, or fail deep inside with an IndexError."""
    _check_positive_int(num_frames, "num_frames")
    offsets = _check_index_array(window_offsets, "window_offsets", owner)
    lengths = _check_index_array(window_lengths, "window_lengths", owner)
    if len(offsets) != len(lengths) or len(offsets) == 0:
        raise ValueError(
            f"{owner} `window_offsets` and `window_lengths` must describe the same W >= 1 windows, got "
            f"{len(offsets)} and {len(lengths)} values."
        )
    for name, bad, what in (
        ("window_offsets", offsets < 0, "must be >= 0"),
        ("window_lengths", lengths < 1, "must be >= 1"),
        ("window_offsets + window_lengths", offsets + lengths > num_frames, f"must be <= num_frames ({num_frames})"),
    ):
        if bad.any():
            window = int(np.argmax(bad))
            raise ValueError(
                f"{owner} `{name}` {what}: window {window} has offset {int(offsets[window])} and length "
                f"{int(lengths[window])}."
            )
    return offsets, lengths


@dataclass(frozen=True)
class RGNetWindowMetadata:
    """Where each (query, window) pair of a processor batch comes from; needed by post-processing.

    Pairs are query-major: pair `p = q · W + w` is query `q` with window `w`.

    Attributes:
        window_offsets (`np.ndarray` of shape `(W,)`, int64): First frame `w0` of each window of the video.
        window_lengths (`np.ndarray` of shape `(W,)`, int64): Valid length `n` of each window.
        pair_query_index (`np.ndarray` of shape `(N,)`, int64): Query of each pair.
        pair_window_index (`np.ndarray` of shape `(N,)`, int64): Window of each pair.
        num_queries (`int`): `Nq`.
        num_frames (`int`): Frames `T` of the video.
        seconds_per_frame (`float`): `δ`.
    """

    window_offsets: np.ndarray
    window_lengths: np.ndarray
    pair_query_index: np.ndarray
    pair_window_index: np.ndarray
    num_queries: int
    num_frames: int
    seconds_per_frame: float

    def __post_init__(self):
        # A few numpy comparisons over W windows and N pairs, once per processor call.
        owner = "RGNetWindowMetadata"
        offsets, lengths = _check_window_layout(self.window_offsets, self.window_lengths, self.num_frames, owner)
        _check_positive_int(self.num_queries, "num_queries")
        _check_seconds_per_frame(self.seconds_per_frame)
        pair_query = _check_index_array(self.pair_query_index, "pair_query_index", owner)
        pair_window = _check_index_array(self.pair_window_index, "pair_window_index", owner)
        if len(pair_query) != len(pair_window):
            raise ValueError(
                f"{owner} `pair_query_index` and `pair_window_index` must have one entry per pair, got "
                f"{len(pair_query)} and {len(pair_window)}."
            )
        for name, index, limit in (
            ("pair_query_index", pair_query, self.num_queries),
            ("pair_window_index", pair_window, len(offsets)),
        ):
            bad = (index < 0) | (index >= limit)
            if bad.any():
                pair = int(np.argmax(bad))
                raise ValueError(f"{owner} `{name}` must lie in [0, {limit}): pair {pair} has {int(index[pair])}.")
        for name, value in (
            ("window_offsets", offsets),
            ("window_lengths", lengths),
            ("pair_query_index", pair_query),
            ("pair_window_index", pair_window),
        ):
            object.__setattr__(self, name, value)  # int64 arrays (the same objects when they already were)

    @property
    def num_windows(self) -> int:
        """Windows `W` of the video."""
        return len(self.window_offsets)

    @property
    def num_pairs(self) -> int:
        """Pairs `N = Nq · W` in the batch."""
        return len(self.pair_query_index)


@dataclass(frozen=True, eq=False)
class RGNetVideoWindows:
    """One video cut into the processor's windows, to pair with any number of queries.

    [`RGNetProcessor.cut_windows`] once per video (and `.to(device)` to keep them on the model's device), then
    `processor(video_windows=..., text_features=...)` for each group of queries: the windows are cut and sent to the
    device once instead of once per group (a 2-hour MAD movie's windows hold 150 MB).

    Attributes:
        windows (`torch.Tensor` of shape `(W, Lv, Dv)`): Each window's frames, zero padded to the longest window.
        window_mask (`torch.Tensor` of shape `(W, Lv)`): 1 = real frame.
        window_offsets (`np.ndarray` of shape `(W,)`, int64), window_lengths (`(W,)`, int64): See
            [`RGNetWindowMetadata`].
        num_frames (`int`): Frames `T` of the video.
    """

    windows: torch.Tensor
    window_mask: torch.Tensor
    window_offsets: np.ndarray
    window_lengths: np.ndarray
    num_frames: int

    @property
    def num_windows(self) -> int:
        """Windows `W` of the video."""
        return len(self.window_offsets)

    def __post_init__(self):
        offsets, lengths = _check_window_layout(
            self.window_offsets, self.window_lengths, self.num_frames, "RGNetVideoWindows"
        )
        num_windows = len(offsets)
        if (
            not isinstance(self.windows, torch.Tensor)
            or not isinstance(self.window_mask, torch.Tensor)
            or self.windows.ndim != 3
            or tuple(self.window_mask.shape) != tuple(self.windows.shape[:2])
            or self.windows.shape[0] != num_windows
            or len(self.window_lengths) != num_windows
        ):
            raise ValueError(
                f"RGNetVideoWindows needs windows (W, Lv, Dv), window_mask (W, Lv) and W offsets and lengths; got "
                f"{tuple(getattr(self.windows, 'shape', ()))}, {tuple(getattr(self.window_mask, 'shape', ()))}, "
                f"{num_windows} and {len(lengths)}."
            )
        padded_length = self.windows.shape[1]
        if int(lengths.max()) > padded_length:
            window = int(np.argmax(lengths))
            raise ValueError(
                f"RGNetVideoWindows `window_lengths` must be at most the padded length {padded_length} of `windows`: "
                f"window {window} has length {int(lengths[window])}."
            )
        if self.window_mask.device.type == "cpu":  # W·Lv values; a mask on an accelerator was checked before `.to`
            differs = (self.window_mask != 0) != (torch.arange(padded_length) < torch.from_numpy(lengths)[:, None])
            if differs.any():
                window = int(differs.any(dim=1).nonzero()[0, 0])
                raise ValueError(
                    "RGNetVideoWindows `window_mask` must be 1 on the first `window_lengths` frames of each window and "
                    f"0 after them: window {window} (length {int(lengths[window])}) differs."
                )
        object.__setattr__(self, "window_offsets", offsets)
        object.__setattr__(self, "window_lengths", lengths)

    def to(self, device: torch.device | str) -> RGNetVideoWindows:
        """The same windows with their tensors on `device`."""
        windows, window_mask = (copy_to_device(tensor, device) for tensor in (self.windows, self.window_mask))
        return replace(self, windows=windows, window_mask=window_mask)


_SHARED_INPUTS = {  # index of a batch's shared rows -> the inputs holding those rows
    "video_pair_index": ("video_features", "video_mask"),
    "text_pair_index": ("text_features", "text_mask", "input_ids", "attention_mask"),
}


def count_pairs(inputs: Mapping[str, Any]) -> int:
    """(query, window) pairs of a batch in either form: entries of `video_pair_index` where the windows are shared,
    rows of `video_mask` otherwise."""
    return len(inputs["video_pair_index"] if "video_pair_index" in inputs else inputs["video_mask"])


def select_pairs(inputs: Mapping[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    """The model inputs of pairs `rows` of a processor batch, for running the model on consecutive slices of pairs.

    Per-pair tensors are sliced. A batch with shared windows (`video_pair_index`) or queries (`text_pair_index`)
    keeps only the windows or queries those pairs read, with the index renumbered to them, so a slice never carries
    rows it does not use.

    Args:
        inputs (`Mapping[str, torch.Tensor]`): A processor batch (any form), on any device.
        rows (`slice`): The pairs, e.g. `slice(first, first + pairs_per_forward)`.

    Returns:
        `dict[str, torch.Tensor]`: keyword arguments of the model's `forward`.
    """
    # An integer would index one pair and drop the pair dimension; a negative step is not a run of pairs.
    if not isinstance(rows, slice) or not (rows.step is None or (isinstance(rows.step, int) and rows.step > 0)):
        raise ValueError(f"`rows` must be a slice of pairs such as slice(first, first + n), got {rows!r}.")
    shared = {
        index: [key for key in keys if key in inputs] for index, keys in _SHARED_INPUTS.items() if index in inputs
    }
    held = {key for keys in shared.values() for key in keys} | set(shared)
    selected = {key: value[rows] for key, value in inputs.items() if key not in held}
    for index, keys in shared.items():
        used, selected[index] = torch.unique(inputs[index][rows], return_inverse=True)
        selected.update({key: inputs[key][used] for key in keys})
    return selected


class RGNetBatchFeature(BatchFeature):
    """A `BatchFeature` of model inputs that also carries the batch's [`RGNetWindowMetadata`].

    Its keys are exactly `forward` parameters, so `model(**inputs)` works; the metadata is the attribute
    `window_metadata` (not a key), kept through `.to(...)` and pickling.
    """

    def __init__(self, data=None, tensor_type=None, window_metadata: RGNetWindowMetadata | None = None):
        super().__init__(data, tensor_type=tensor_type)
        self.window_metadata = window_metadata

    def __getstate__(self):
        return {"data": self.data, "window_metadata": self.window_metadata}

    def __setstate__(self, state):
        self.data = state["data"]
        self.window_metadata = state.get("window_metadata")


@contextmanager
def _truncating_on_the_right(tokenizer):
    """The tokenizer truncates on the right while inside (its own `truncation_side` is restored after)."""
    side = getattr(tokenizer, "truncation_side", "right")
    tokenizer.truncation_side = "right"
    try:
        yield
    finally:
        tokenizer.truncation_side = side


def _tokenize_queries(tokenizer, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """`input_ids`/`attention_mask` of `texts`: each query's first `max_tokens` tokens between one start and one end
    token, padded on the right, whatever sides the tokenizer was set to pad and truncate on.

    The text encoder finds a query's start and end tokens by position (the first and the last real token), as
    precomputed token features keep a query's first tokens: a tokenizer that does not wrap each query in special
    tokens would lose real words there, so it is an error.
    """
    with _truncating_on_the_right(tokenizer):
        encoded = tokenizer(
            texts,
            padding="longest",
            padding_side="right",
            truncation=True,
            max_length=max_tokens + tokenizer.num_special_tokens_to_add(),
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
    special, real = encoded["special_tokens_mask"].bool(), encoded["attention_mask"].bool()
    last = real.sum(dim=1) - 1  # each row's last real token
    wrapped = (last > 0) & special[:, 0] & special.gather(1, last.clamp(min=0)[:, None])[:, 0]
    if not bool(wrapped.all()):
        row = int((~wrapped).nonzero()[0])
        raise ValueError(
            f"`tokenizer` ({type(tokenizer).__name__}) must wrap each query in a start and an end special token "
            f"(as CLIP's tokenizer does): the text encoder drops a query's first and last token as those; query "
            f"{texts[row]!r} became {encoded['input_ids'][row][real[row]].tolist()} with special-token mask "
            f"{special[row][real[row]].int().tolist()}."
        )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


class RGNetProcessor(ProcessorMixin):
    r"""
    Processor of RGNet: a tokenizer plus the windowing (spec §6.1, §7.1) and inference (spec §7) settings.

    `processor(text=..., video_features=...)` (or `text_features=...`) cuts one video into all its windows and pairs
    every query with every window, query-major; `post_process_video_grounding` turns the model outputs of such a
    batch into ranked moments in seconds. The settings mirror the `RGNetConfig` fields of the same names; build them
    from a config with [`RGNetProcessor.from_config`].

    Args:
        tokenizer ([`PreTrainedTokenizerBase`], *optional*):
            Tokenizer of the text encoder (a `CLIPTokenizer` for the published models; any tokenizer that wraps each
            query in a start and an end special token). Needed for `text=` inputs and for saving; may be `None` when
            only precomputed `text_features` are used. It is always used with right padding and truncation.
        max_window_frames (`int`, *optional*, defaults to 90): Window length `Lmax` in frames.
        window_stride (`int`, *optional*): Stride `s`; `None` means half a window.
        max_text_tokens (`int`, *optional*, defaults to 20): Query tokens kept (start/end tokens not counted).
        seconds_per_frame (`float`, *optional*, defaults to 0.2): `δ`.
        query_normalization (`str`, *optional*, defaults to `"mad"`): `"mad"` or `"ego4d"` (spec §2).
        top_k_windows (`int`, *optional*, defaults to 30): Windows whose proposals are pooled.
        nms_threshold (`float`, *optional*, defaults to 0.5): NMS suppresses IoU strictly above this.
        max_candidates_before_nms (`int`, *optional*, defaults to 200): Ranked candidates entering NMS.
        max_predictions (`int`, *optional*, defaults to 100): Moments returned per query.
        matching_top_k_frames (`int`, *optional*, defaults to 3): `k` of the matching score (spec §7.4).
        scale_matching_by_window_score (`bool`, *optional*, defaults to `False`): Ego4D: `True`.

    Any other keyword argument (a misspelt setting) is a TypeError, with or without a tokenizer; numbers and flags
    of the wrong type are a ValueError naming the setting.
    """

    def __init__(
        self,
        tokenizer=None,
        max_window_frames: int = 90,
        window_stride: int | None = None,
        max_text_tokens: int = 20,
        seconds_per_frame: float = 0.2,
        query_normalization: str = "mad",
        top_k_windows: int = 30,
        nms_threshold: float = 0.5,
        max_candidates_before_nms: int = 200,
        max_predictions: int = 100,
        matching_top_k_frames: int = 3,
        scale_matching_by_window_score: bool = False,
        **kwargs,
    ):
        if tokenizer is None:
            # Feature-only use (precomputed text features). ProcessorMixin insists on a tokenizer, so its
            # constructor is skipped; `save_pretrained` refuses below because there is no tokenizer to write.
            # Its check of the keywords is not: a misspelt setting must not silently keep its default.
            self.tokenizer = None
            self.chat_template = kwargs.pop("chat_template", None)
            if kwargs:
                raise TypeError(
                    f"Unexpected keyword argument(s) {sorted(kwargs)}; RGNetProcessor takes `tokenizer` and the "
                    f"settings {', '.join(self.SETTINGS)}."
                )
        else:
            super().__init__(tokenizer, **kwargs)
        if window_stride is None:
            if _check_positive_int(max_window_frames, "max_window_frames") < 2:
                raise ValueError(
                    f"`max_window_frames` must be at least 2 (the default `window_stride` is half a window), got "
                    f"{max_window_frames!r}."
                )
            window_stride = max_window_frames // 2
        _check_window_settings(max_window_frames, window_stride)
        # Python ints from here on (numpy integers are accepted, and would not serialise to JSON).
        max_window_frames, window_stride = int(max_window_frames), int(window_stride)
        max_text_tokens = _check_positive_int(max_text_tokens, "max_text_tokens")
        top_k_windows = _check_positive_int(top_k_windows, "top_k_windows")
        max_candidates_before_nms = _check_positive_int(max_candidates_before_nms, "max_candidates_before_nms")
        max_predictions = _check_positive_int(max_predictions, "max_predictions")
        matching_top_k_frames = _check_positive_int(matching_top_k_frames, "matching_top_k_frames")
        _check_seconds_per_frame(seconds_per_frame)
        if not isinstance(query_normalization, str) or query_normalization not in QUERY_NORMALIZERS:
            raise ValueError(
                f"Unknown `query_normalization` {query_normalization!r}; expected one of {QUERY_NORMALIZATIONS}."
            )
        _check_nms_threshold(nms_threshold)
        _check_bool(scale_matching_by_window_score, "scale_matching_by_window_score")
        self.max_window_frames = max_window_frames
        self.window_stride = window_stride
        self.max_text_tokens = max_text_tokens
        self.seconds_per_frame = float(seconds_per_frame)
        self.query_normalization = query_normalization
        self.top_k_windows = top_k_windows
        self.nms_threshold = float(nms_threshold)
        self.max_candidates_before_nms = max_candidates_before_nms
        self.max_predictions = max_predictions
        self.matching_top_k_frames = matching_top_k_frames
        self.scale_matching_by_window_score = bool(scale_matching_by_window_score)

    @classmethod
    def from_config(cls, config: RGNetConfig, tokenizer=None) -> RGNetProcessor:
        """Build a processor whose settings are the windowing and inference fields of `config`.

        Args:
            config ([`RGNetConfig`]): Model configuration.
            tokenizer ([`PreTrainedTokenizerBase`], *optional*): Tokenizer of the text encoder.
        """
        return cls(tokenizer, **{name: getattr(config, name) for name in cls.SETTINGS})

    @classmethod
    def from_model_folder(cls, model_dir: str | os.PathLike, config: RGNetConfig) -> RGNetProcessor:
        """The processor saved in a local model folder (with its tokenizer, if any), or, for a folder without one
        (`model.save_pretrained` alone), a feature-only processor [`from_config`] of the model's `config`."""
        if os.path.isfile(os.path.join(model_dir, PROCESSOR_CONFIG_NAME)):
            return cls.from_pretrained(model_dir)
        return cls.from_config(config)

    # The `__init__` keywords besides the tokenizer: read from `RGNetConfig` fields of the same names by
    # `from_config`, written to `processor_config.json` by a feature-only `save_pretrained`.
    SETTINGS = (
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

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save the settings (`processor_config.json`) and the tokenizer, if any; see `ProcessorMixin.save_pretrained`.

        A feature-only processor (no tokenizer) saves its settings alone and loads back the same way; with
        `push_to_hub`, they are then uploaded by `push_to_hub` to `repo_id` (by default the folder's name), which takes
        the other keywords (`commit_message`, `private`, `token`, `revision`, `create_pr`, ...).
        """
        if self.tokenizer is not None:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            paths = self.save_pretrained(save_directory)
            self.push_to_hub(repo_id, **kwargs)
            return paths
        from transformers.dynamic_module_utils import custom_object_save

        os.makedirs(save_directory, exist_ok=True)
        settings = {name: getattr(self, name) for name in self.SETTINGS}
        settings["processor_class"] = type(self).__name__
        if self._auto_class is not None:
            custom_object_save(self, save_directory)
            settings["auto_map"] = {self._auto_class: f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"}
        path = os.path.join(save_directory, PROCESSOR_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=2, sort_keys=True)
        return [path]

    # Keywords of `from_pretrained` that say where and how to load (those `AutoProcessor` passes included), as
    # opposed to settings: the first group is handed to `cached_file`.
    _HUB_KWARGS = (
        "cache_dir",
        "force_download",
        "proxies",
        "token",
        "revision",
        "local_files_only",
        "subfolder",
        "repo_type",
        "user_agent",
    )
    _LOADING_KWARGS = _HUB_KWARGS + (
        "trust_remote_code",
        "code_revision",
        "_from_auto",
        "_from_pipeline",
        "_commit_hash",
    )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved processor; a folder without tokenizer files gives a feature-only processor.

        Keyword arguments are settings overriding the saved ones, or loading options (`cache_dir`, `revision`,
        `token`, `local_files_only`, `subfolder`, ...). For a feature-only folder anything else is a TypeError; with
        a tokenizer other keywords go to the tokenizer's loading, except near misses of a setting's name (TypeError).
        """
        from transformers.utils import cached_file

        lookup = {key: kwargs[key] for key in cls._HUB_KWARGS if key in kwargs}
        tokenizer_file = cached_file(
            pretrained_model_name_or_path,
            "tokenizer_config.json",
            _raise_exceptions_for_missing_entries=False,
            **lookup,
        )
        if tokenizer_file is not None:
            # With a tokenizer, other keywords also go to the tokenizer's loading, so only a near miss of a setting's
            # name is surely a mistake; it must not silently keep the saved value.
            for key in kwargs:
                if key not in cls.SETTINGS and key not in cls._LOADING_KWARGS:
                    close = difflib.get_close_matches(key, cls.SETTINGS, n=1, cutoff=0.8)
                    if close:
                        raise TypeError(
                            f"Unexpected keyword argument {key!r} for RGNetProcessor; did you mean {close[0]!r}?"
                        )
            # Setting overrides are applied to the loaded processor, not passed down: the tokenizer would keep them
            # as its own options (and write them to `tokenizer_config.json`).
            overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in cls.SETTINGS}
            processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
            if not overrides:
                return processor
            settings = {name: getattr(processor, name) for name in cls.SETTINGS}
            return cls(tokenizer=processor.tokenizer, **{**settings, **overrides})
        config_file = cached_file(pretrained_model_name_or_path, PROCESSOR_CONFIG_NAME, **lookup)
        with open(config_file, encoding="utf-8") as handle:
            settings = json.load(handle)
        # Keys of the file besides the settings (`processor_class`, `auto_map`) are bookkeeping, not arguments.
        settings = {name: settings[name] for name in cls.SETTINGS if name in settings}
        unknown = sorted(key for key in kwargs if key not in cls.SETTINGS and key not in cls._LOADING_KWARGS)
        if unknown:  # as the constructor does: a misspelt override must not silently keep the saved value
            raise TypeError(
                f"Unexpected keyword argument(s) {unknown} for a feature-only RGNetProcessor; expected the settings "
                f"{', '.join(cls.SETTINGS)} or loading options such as {', '.join(cls._HUB_KWARGS)}."
            )
        settings.update({key: value for key, value in kwargs.items() if key in cls.SETTINGS})
        return cls(tokenizer=None, **settings)

    @property
    def model_input_names(self) -> list[str]:
        """Keys `__call__` can return (all are `RGNetForVideoGrounding.forward` parameters)."""
        return [
            "video_features",
            "video_mask",
            "video_pair_index",
            "text_features",
            "text_mask",
            "input_ids",
            "attention_mask",
            "text_pair_index",
        ]

    # -- inputs --

    def prepare_queries(
        self, text: str | list[str] | None = None, text_features: Any = None
    ) -> dict[str, torch.Tensor]:
        """Text inputs of `Nq` queries, one row per query (not yet paired with windows).

        Args:
            text (`str` or `list[str]`, *optional*): Raw queries; normalised with `query_normalization`, then
                tokenised with at most `max_text_tokens` tokens between the tokenizer's special tokens.
            text_features (*optional*): Precomputed token features: one array `(Lt, Dt)`, an array `(Nq, Lt, Dt)`
                (all tokens real) or a sequence of `Nq` arrays `(Lt_i, Dt)`; numpy or torch. Truncated to
                `max_text_tokens` and L2-normalised (`x/(‖x‖ + 1e-5)`).

        Returns:
            `dict[str, torch.Tensor]`: `input_ids`/`attention_mask` `(Nq, Lt + specials)` for `text`, or
            `text_features` `(Nq, Lt, Dt)`/`text_mask` `(Nq, Lt)` for `text_features`.
        """
        if (text is None) == (text_features is None):
            raise ValueError("Pass exactly one of `text` (raw queries) or `text_features` (precomputed tokens).")
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not texts:
                raise ValueError("`text` must hold at least one query.")
            if self.tokenizer is None:
                raise ValueError("`text` needs a tokenizer; this processor was built without one.")
            normalized = [normalize_query(item, self.query_normalization) for item in texts]
            return _tokenize_queries(self.tokenizer, normalized, self.max_text_tokens)
        if isinstance(text_features, (list, tuple)):
            items = list(text_features)
        else:
            array = _as_float_tensor(text_features, "text_features")
            if array.ndim == 2:
                items = [array]
            elif array.ndim == 3:
                items = list(array.unbind(0))
            else:
                raise ValueError(
                    f"`text_features` must have shape (Lt, Dt) or (Nq, Lt, Dt), got {tuple(array.shape)}."
                )
        features, mask = prepare_text_features(items, self.max_text_tokens)
        return {"text_features": features, "text_mask": mask}

    def cut_windows(self, video_features: Any, device: torch.device | str | None = None) -> RGNetVideoWindows:
        """Cut one video into this processor's windows (spec §7.1), to pair with many groups of queries.

        Args:
            video_features (`np.ndarray` or `torch.Tensor` of shape `(T, Dv)`): One video's per-frame features.
            device (`torch.device` or `str`, *optional*): Where to cut and keep the windows (the model's device): the
                video goes there once and the windows, which overlap (twice its size at MAD's half-window stride),
                are gathered there. Defaults to the CPU.

        Returns:
            [`RGNetVideoWindows`] on `device`, for `__call__(video_windows=...)`.
        """
        video = _as_float_tensor(video_features, "video_features", device=device)
        if video.ndim != 2 or 0 in video.shape:
            raise ValueError(
                f"`video_features` must have shape (T >= 1, Dv >= 1) for one video, got {tuple(video.shape)}."
            )
        offsets, lengths = enumerate_windows(video.shape[0], self.max_window_frames, self.window_stride)
        windows, window_mask = gather_windows(video, offsets, lengths)  # (W, Lv, Dv), (W, Lv)
        return RGNetVideoWindows(windows, window_mask, offsets, lengths, int(video.shape[0]))

    def __call__(
        self,
        text: str | list[str] | None = None,
        video_features: Any = None,
        text_features: Any = None,
        share_windows: bool = False,
        video_windows: RGNetVideoWindows | None = None,
        share_queries: bool = False,
        **kwargs,
    ) -> RGNetBatchFeature:
        """Pair every query with every window of one video (spec §7.1).

        Pairs are query-major: pair `p = q · W + w` holds query `q` and window `w`, so the outputs of query `q` are
        rows `q·W … q·W + W − 1`. The windows are cut with one gather, zero padded to the longest window.
        By default the batch holds `Nq · W · Lv · Dv` video values (a 2-hour MAD movie: about 150 MB per query); with
        `share_windows=True` it holds each window once and `video_pair_index` says which window each pair reads
        (the model takes both forms). The model may be run on consecutive slices of the pairs and the outputs
        concatenated, since every pair is independent ([`select_pairs`] cuts such slices of either form).

        Args:
            text (`str` or `list[str]`, *optional*): Raw queries (needs a tokenizer; the model must have a text
                encoder).
            video_features (`np.ndarray` or `torch.Tensor` of shape `(T, Dv)`): One video's per-frame features, not
                normalised.
            text_features (*optional*): Precomputed query token features (see `prepare_queries`).
            share_windows (`bool`, *optional*, defaults to `False`): Return each window once, with
                `video_pair_index`, instead of one copy per pair.
            video_windows ([`RGNetVideoWindows`], *optional*): The video already cut by [`cut_windows`], instead of
                `video_features`; its tensors go into the batch as they are (on their device).
            share_queries (`bool`, *optional*, defaults to `False`): Return each query's text once, with
                `text_pair_index`, instead of one copy per pair (a text encoder then runs once per query, not once
                per window).

        Returns:
            [`RGNetBatchFeature`] with `video_features` `(N, Lv, Dv)`, `video_mask` `(N, Lv)` (with `share_windows`:
            `(W, Lv, Dv)`, `(W, Lv)` and `video_pair_index` `(N,)`) and either `text_features` `(N, Lt, Dt)`/
            `text_mask` `(N, Lt)` or `input_ids`/`attention_mask` (with `share_queries`: `Nq` rows and
            `text_pair_index` `(N,)`), `N = Nq · W`; the attribute `window_metadata` ([`RGNetWindowMetadata`]) is
            needed by `post_process_video_grounding`.
        """
        if kwargs:
            raise ValueError(
                f"Unexpected argument(s) {sorted(kwargs)}; expected text, text_features, video_features, "
                "share_windows, video_windows, share_queries."
            )
        share_windows = _check_bool(share_windows, "share_windows")
        share_queries = _check_bool(share_queries, "share_queries")
        if (video_features is None) == (video_windows is None):
            raise ValueError("Pass one of `video_features` (T, Dv) of the video or its `video_windows`.")
        if video_windows is None:
            video_windows = self.cut_windows(video_features)
        elif not isinstance(video_windows, RGNetVideoWindows):
            raise ValueError(
                f"`video_windows` must be an RGNetVideoWindows (`processor.cut_windows(...)`), "
                f"got {type(video_windows).__name__}."
            )
        queries = self.prepare_queries(text=text, text_features=text_features)
        num_queries = next(iter(queries.values())).shape[0]
        windows, window_mask = video_windows.windows, video_windows.window_mask
        offsets, lengths = video_windows.window_offsets, video_windows.window_lengths
        num_windows = len(offsets)
        pair_query = np.repeat(np.arange(num_queries, dtype=np.int64), num_windows)
        pair_window = np.tile(np.arange(num_windows, dtype=np.int64), num_queries)
        if share_windows:
            data = {
                "video_features": windows,
                "video_mask": window_mask,
                "video_pair_index": torch.from_numpy(pair_window),
            }
        else:
            data = {
                "video_features": windows.repeat(num_queries, 1, 1),  # (Nq·W, Lv, Dv), query-major
                "video_mask": window_mask.repeat(num_queries, 1),
            }
        if share_queries:
            data.update(queries, text_pair_index=torch.from_numpy(pair_query))
        else:
            data.update({key: value.repeat_interleave(num_windows, dim=0) for key, value in queries.items()})
        metadata = RGNetWindowMetadata(
            window_offsets=offsets,
            window_lengths=lengths,
            pair_query_index=pair_query,
            pair_window_index=pair_window,
            num_queries=num_queries,
            num_frames=video_windows.num_frames,
            seconds_per_frame=self.seconds_per_frame,
        )
        return RGNetBatchFeature(data, window_metadata=metadata)

    # -- training --

    def prepare_training_example(
        self, query_row: Mapping[str, Any], feature_store: Any, rng: np.random.Generator, **kwargs
    ) -> dict[str, Any]:
        """`read_training_example` with this processor's windowing settings (see there for arguments)."""
        return read_training_example(
            query_row,
            feature_store,
            rng,
            max_window_frames=self.max_window_frames,
            window_stride=self.window_stride,
            seconds_per_frame=self.seconds_per_frame,
            **kwargs,
        )

    # -- outputs --

    def post_process_video_grounding(
        self,
        outputs: Any,
        window_metadata: RGNetWindowMetadata,
        *,
        video_features: Any = None,
        sentence_embeddings: Any = None,
        frame_similarities: Any = None,
        top_k_windows: int | None = None,
        nms_threshold: float | None = None,
        max_predictions: int | None = None,
        max_candidates_before_nms: int | None = None,
        matching_top_k_frames: int | None = None,
        scale_matching_by_window_score: bool | None = None,
        return_candidates: bool = False,
        return_single_score_rankings: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """Ranked moments in seconds for every query of a processor batch (spec §7).

        Per query: windows ranked by `σ(ρ)` (ties by index), proposals of the `top_k_windows` best windows scored
        `p_fg · σ(ρ)` and mapped to seconds, matching score (§7.4, frame ranges clipped to each window's valid
        frames), rounding, min-max fusion, merge of identical spans, stable sort and NMS. Results do not depend on
        how many queries were batched together. Keyword settings default to the processor's.

        Args:
            outputs: Model outputs with `logits` `(N, Q, 2)`, `pred_spans` `(N, Q, 2)` and `window_logits` `(N, 1)`
                (an `RGNetVideoGroundingOutput` or a mapping). With `grounding_pair_index` `(G,)` (the model run
                with `top_k_windows`), `logits` and `pred_spans` hold only those `G` pairs, which must include every
                window kept (`top_k_windows` here no larger than the model's).
            window_metadata ([`RGNetWindowMetadata`]): `inputs.window_metadata` of the processor call.
            video_features (`np.ndarray` or `torch.Tensor` of shape `(T, Dv)`): The same video features. A tensor on
                an accelerator stays there: the frame-query product of the matching score (one for all queries) runs
                there, the rest on the CPU.
            sentence_embeddings (array of shape `(Nq, Dc)` or `(Dc,)`): Sentence embedding of each query, in the
                video feature space (`Dc == Dv`).
            frame_similarities (array of shape `(T, Nq)`, or `(T,)` for one query, *optional*): The matching score's
                cosines, [`frame_query_similarities`]`(video_features, sentence_embeddings)` computed beforehand (on
                the model's device, then brought to the CPU, when this call runs on a worker thread); replaces
                `video_features` and `sentence_embeddings`.
            return_candidates (`bool`, *optional*): Add each query's pooled candidates.
            return_single_score_rankings (`bool`, *optional*): Add the rankings by one score only.

        Returns:
            `list[dict[str, torch.Tensor]]`: one dict per query, see `post_process_query`.
        """
        if not isinstance(window_metadata, RGNetWindowMetadata):
            raise ValueError(
                f"`window_metadata` must be an RGNetWindowMetadata (`inputs.window_metadata`), "
                f"got {type(window_metadata).__name__}."
            )
        settings = _check_post_processing_settings(
            top_k_windows=self.top_k_windows if top_k_windows is None else top_k_windows,
            nms_threshold=self.nms_threshold if nms_threshold is None else nms_threshold,
            max_predictions=self.max_predictions if max_predictions is None else max_predictions,
            max_candidates_before_nms=(
                self.max_candidates_before_nms if max_candidates_before_nms is None else max_candidates_before_nms
            ),
            matching_top_k_frames=(
                self.matching_top_k_frames if matching_top_k_frames is None else matching_top_k_frames
            ),
        )
        if scale_matching_by_window_score is None:
            scale_matching_by_window_score = self.scale_matching_by_window_score
        _check_bool(scale_matching_by_window_score, "scale_matching_by_window_score")
        _check_bool(return_candidates, "return_candidates")
        _check_bool(return_single_score_rankings, "return_single_score_rankings")

        def field(name: str) -> Any:
            return outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)

        def read_output(name: str, rows: int) -> torch.Tensor:
            if isinstance(outputs, tuple):
                raise ValueError(
                    "`outputs` is a tuple (`return_dict=False`); pass the model's output object (`return_dict=True`, "
                    "the default), whose fields post-processing reads by name."
                )
            if field(name) is None:
                raise ValueError(f"`outputs` has no `{name}`.")
            value = _cpu_tensor(field(name), f"outputs.{name}").float()
            if value.shape[0] != rows:
                raise ValueError(f"`outputs.{name}` has {value.shape[0]} rows for {rows} pairs.")
            if not _all_finite(value):
                raise ValueError(f"`outputs.{name}` contains NaN or infinite values.")
            return value

        # Moments of only some pairs (`top_k_windows` inference) are rows of `grounding_pair_index`; the other pairs
        # get NaN moments, and every query's kept windows must be grounded (checked below).
        num_pairs, index, grounded = window_metadata.num_pairs, field("grounding_pair_index"), None
        if index is not None:
            index = torch.as_tensor(index).detach().cpu()
            if (
                index.dtype != torch.int64
                or index.ndim != 1
                or not ((index >= 0) & (index < num_pairs)).all()
                or index.unique().numel() != index.numel()
            ):
                raise ValueError(
                    f"`outputs.grounding_pair_index` must hold distinct int64 pair indices in [0, {num_pairs}) "
                    f"(`window_metadata` describes {num_pairs} pairs), got {index!r}."
                )
            grounded = torch.zeros(num_pairs, dtype=torch.bool).index_fill_(0, index, True)
        moment_rows = num_pairs if index is None else len(index)
        logits, pred_spans = read_output("logits", moment_rows), read_output("pred_spans", moment_rows)
        window_logits = read_output("window_logits", num_pairs).reshape(num_pairs, -1)
        if logits.ndim != 3 or logits.shape[-1] != 2 or pred_spans.shape != logits.shape:
            raise ValueError(
                f"`outputs.logits` and `outputs.pred_spans` must both have shape (N, Q, 2), got "
                f"{tuple(logits.shape)} and {tuple(pred_spans.shape)}."
            )
        if index is not None:
            logits = logits.new_full((num_pairs, *logits.shape[1:]), float("nan")).index_copy_(0, index, logits)
            pred_spans = torch.full_like(logits, float("nan")).index_copy_(0, index, pred_spans)
        if window_logits.shape[1] != 1:
            raise ValueError(f"`outputs.window_logits` must have shape (N, 1), got {tuple(window_logits.shape)}.")
        if frame_similarities is None:
            if video_features is None or sentence_embeddings is None:
                raise ValueError("Pass `video_features` and `sentence_embeddings`, or `frame_similarities`.")
            video = _as_float_tensor(video_features, "video_features", keep_device=True)
            if video.ndim != 2 or video.shape[0] != window_metadata.num_frames:
                raise ValueError(
                    f"`video_features` must have shape ({window_metadata.num_frames}, Dv) like the processed video, "
                    f"got {tuple(video.shape)}."
                )
            embeddings = _as_float_tensor(sentence_embeddings, "sentence_embeddings")
            if embeddings.ndim == 1:
                embeddings = embeddings[None, :]
            if embeddings.shape != (window_metadata.num_queries, video.shape[1]):
                raise ValueError(
                    f"`sentence_embeddings` must have shape ({window_metadata.num_queries}, {video.shape[1]}) "
                    f"(one per query, in the video feature space), got {tuple(embeddings.shape)}."
                )
            # One product for all queries (the per-frame cosine of the matching score), where the video is.
            frame_similarities = frame_query_similarities(video, embeddings)
        elif video_features is not None or sentence_embeddings is not None:
            raise ValueError("Pass `frame_similarities` or `video_features` and `sentence_embeddings`, not both.")
        similarities = _as_float_tensor(frame_similarities, "frame_similarities")  # on the CPU
        if similarities.ndim == 1 and window_metadata.num_queries == 1:
            similarities = similarities[:, None]
        if similarities.shape != (window_metadata.num_frames, window_metadata.num_queries):
            raise ValueError(
                f"`frame_similarities` must have shape ({window_metadata.num_frames}, {window_metadata.num_queries}) "
                f"(frames, queries), got {tuple(similarities.shape)}."
            )

        # Pairs grouped by query, windows in order; every query must hold every window exactly once.
        num_queries, num_windows = window_metadata.num_queries, window_metadata.num_windows
        if window_metadata.num_pairs != num_queries * num_windows:
            raise ValueError(
                f"`window_metadata` must hold every window exactly once for every query: {window_metadata.num_pairs} "
                f"pairs for {num_queries} queries and {num_windows} windows."
            )
        order = np.lexsort((window_metadata.pair_window_index, window_metadata.pair_query_index))
        grouped_windows = window_metadata.pair_window_index[order].reshape(num_queries, num_windows)
        grouped_queries = window_metadata.pair_query_index[order].reshape(num_queries, num_windows)
        complete = (grouped_windows == np.arange(num_windows)) & (grouped_queries == np.arange(num_queries)[:, None])
        if not complete.all():
            query = int(np.flatnonzero(~complete.all(axis=1))[0])
            raise ValueError(f"`window_metadata` must hold every window exactly once for query {query}.")
        rows_of_query = torch.from_numpy(order.reshape(num_queries, num_windows))
        window_logits = window_logits[rows_of_query, 0]  # (Nq, W)
        if grounded is not None:  # the windows kept must have been grounded
            kept = rank_windows(query_window_scores(window_logits))[:, : settings["top_k_windows"]]
            missing = ~grounded[rows_of_query.gather(1, kept)]  # (Nq, Kw)
            if missing.any():
                query = int(missing.any(dim=1).nonzero()[0, 0])
                raise ValueError(
                    f"Query {query} keeps window(s) {kept[query][missing[query]].tolist()} among its `top_k_windows` = "
                    f"{settings['top_k_windows']} best, but `outputs` has no moments for them "
                    "(`outputs.grounding_pair_index`): run the model with `top_k_windows` at least as large, and with "
                    "`pair_query_index=inputs.window_metadata.pair_query_index` when a call holds several queries."
                )
        with single_intra_op_thread():  # a few hundred values per query: threads would only wait
            results = post_process_queries(
                logits[rows_of_query],
                pred_spans[rows_of_query],
                window_logits,
                window_metadata.window_offsets,
                window_metadata.window_lengths,
                similarities,
                seconds_per_frame=window_metadata.seconds_per_frame,
                scale_matching_by_window_score=bool(scale_matching_by_window_score),
                return_candidates=return_candidates,
                return_single_score_rankings=return_single_score_rankings,
                **settings,
            )
        return results


# ---- Training collator (spec §6.2) ----


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic): a fast, well-mixed integer hash."""
    with np.errstate(over="ignore"):
        values = values + np.uint64(0x9E3779B97F4A7C15)
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def pair_selector_noise(
    query_seeds: np.ndarray, window_seeds: np.ndarray, roles: np.ndarray, num_positions: int
) -> torch.Tensor:
    """Uniform samples for the frame selector's gate noise, a pure function of each pair's seeds.

    A pair's noise depends only on (its query's seed, its window's seed, its role, the position), not on the batch
    it lands in, the process that builds it or the torch random state. So a training run gives the same gate
    samples on one process with gradient accumulation as on several processes, and after a resume.

    Args:
        query_seeds (`np.ndarray` of shape `(N,)`): integer seed of each pair's query sample.
        window_seeds (`np.ndarray` of shape `(N,)`): integer seed of the sample whose window the pair holds.
        roles (`np.ndarray` of shape `(N,)`): 0 for a positive window, 1 for a negative window.
        num_positions (`int`): `1 + Lv` (global token first).

    Returns:
        `torch.FloatTensor` of shape `(N, num_positions)` with values in (0, 1).
    """
    keys = _splitmix64(np.asarray(query_seeds, dtype=np.uint64))
    keys = _splitmix64(keys ^ np.asarray(window_seeds, dtype=np.uint64))
    keys = _splitmix64(keys ^ np.asarray(roles, dtype=np.uint64))
    counters = _splitmix64(keys[:, None] + np.arange(num_positions, dtype=np.uint64)[None, :])
    uniform = ((counters >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)
    return torch.from_numpy(uniform.astype(np.float32))


_REQUIRED_SAMPLE_KEYS = ("video_features", "span", "saliency_positive_frames", "saliency_negative_frames")


@dataclass
class RGNetDataCollator:
    """Collate training samples into a `cross_pairs` or `paired_negative` batch with `labels` (spec §6.2).

    Each sample (e.g. from `read_training_example`) holds `video_features` `(n, Dv)` of its positive window,
    `span` `(2,)`, `saliency_positive_frames` `(K,)`, `saliency_negative_frames` `(K,)`, the query as raw
    `text_features` `(Lt, Dt)` or as `query` text, and for `paired_negative` `negative_video_features` `(n', Dv)`.

    * `cross_pairs`: `N = B²` pairs, `p = i·B + j` = (query `i`, positive window of query `j`); positives are
      `p = i·(B + 1)`. The `B` windows are held once, with `video_pair_index` (`j` for pair `p`): a MAD batch
      carries 8 windows instead of 64 copies (15 MB instead of 118 MB to collate and send to the device).
    * `paired_negative`: `N = 2B`; rows `0 … B−1` = query `b` with its positive window, rows `B … 2B−1` = query `b`
      with its negative window.

    Either way the `B` queries' text is held once, with `text_pair_index` (a text encoder runs on `B` queries, not
    on every pair).

    Windows are zero padded to the longest window of the batch. When every sample carries an integer `noise_seed`
    (as `RGNetTrainingDataset` samples do), the batch also holds `selector_noise` `(N, 1 + Lv)`: the gate's
    uniform samples as a function of each pair's seeds (`pair_selector_noise`), so training does not depend on how
    samples are spread over processes or accumulation steps.

    Args:
        processor ([`RGNetProcessor`]): Supplies the text preparation (truncation, normalisation, tokenizer).
        pair_mode (`str`, *optional*, defaults to `"cross_pairs"`): `"cross_pairs"` or `"paired_negative"`.
    """

    processor: RGNetProcessor
    pair_mode: str = "cross_pairs"

    def __post_init__(self):
        if not isinstance(self.processor, RGNetProcessor):
            raise ValueError(f"`processor` must be an RGNetProcessor, got {type(self.processor).__name__}.")
        if self.pair_mode not in PAIR_MODES:
            raise ValueError(f"Unknown `pair_mode` {self.pair_mode!r}; expected one of {PAIR_MODES}.")

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Build the batch.

        Args:
            samples (sequence of `B` mappings): Training samples (see the class docstring).

        Returns:
            `dict`: model inputs (`video_features` `(N, Lv, Dv)` and `video_mask` `(N, Lv)`, or for `cross_pairs`
            `(B, Lv, Dv)`, `(B, Lv)` and `video_pair_index` `(N,)`; `text_features`/`text_mask` or
            `input_ids`/`attention_mask`, `B` rows, and `text_pair_index` `(N,)`) and `labels` (`batch_mode`,
            `spans` `(B, 2)`,
            `saliency_positive_frames` `(B, K)`, `saliency_negative_frames` `(B, K)`).
        """
        if len(samples) == 0:
            raise ValueError("`samples` must hold at least one sample.")
        keys = _REQUIRED_SAMPLE_KEYS + (("negative_video_features",) if self.pair_mode == "paired_negative" else ())
        for index, sample in enumerate(samples):
            for key in keys:
                if sample.get(key) is None:
                    raise ValueError(f"Sample {index} has no {key!r} (needed for a {self.pair_mode} batch).")
        if all(sample.get("text_features") is not None for sample in samples):
            queries = self.processor.prepare_queries(text_features=[sample["text_features"] for sample in samples])
        elif all(sample.get("query") is not None for sample in samples):
            queries = self.processor.prepare_queries(text=[sample["query"] for sample in samples])
        else:
            raise ValueError("Every sample needs `text_features`, or every sample needs `query` text.")

        batch_size = len(samples)
        windows = [_as_float_tensor(sample["video_features"], "video_features") for sample in samples]
        if self.pair_mode == "paired_negative":
            windows += [
                _as_float_tensor(sample["negative_video_features"], "negative_video_features") for sample in samples
            ]
            video_index = torch.arange(2 * batch_size)
            query_index = torch.arange(batch_size).repeat(2)
        else:
            video_index = torch.arange(batch_size).repeat(batch_size)  # window of query j at p = i·B + j
            query_index = torch.arange(batch_size).repeat_interleave(batch_size)  # query i
        if any(window.ndim != 2 or window.shape[0] == 0 for window in windows):
            raise ValueError("Every window's `video_features` must have shape (n >= 1, Dv).")
        lengths = torch.tensor([window.shape[0] for window in windows])
        video = torch.nn.utils.rnn.pad_sequence(windows, batch_first=True)  # (windows, Lv, Dv)
        video_mask = (torch.arange(video.shape[1])[None, :] < lengths[:, None]).float()

        spans, positive, negative = [], [], []
        for index, sample in enumerate(samples):
            span = np.asarray(sample["span"])
            if span.shape != (2,) or span.dtype.kind not in "iuf" or not np.isfinite(span).all():
                raise ValueError(
                    f"Sample {index}'s `span` must be a finite (center, width) pair of shape (2,), got {sample['span']!r}."
                )
            spans.append(span.astype(np.float32))
            for key, frames in (("saliency_positive_frames", positive), ("saliency_negative_frames", negative)):
                indices = np.asarray(sample[key])
                if indices.ndim != 1 or indices.dtype.kind not in "iu":
                    raise ValueError(
                        f"Sample {index}'s `{key}` must be a 1-D array of integer frame indices, got {sample[key]!r}."
                    )
                if indices.shape != np.shape(positive[0] if positive else indices):
                    raise ValueError(
                        f"Sample {index}'s `{key}` has shape {indices.shape}; every sample's saliency frames must have "
                        f"the shape (K,) of sample 0's, {positive[0].shape}."
                    )
                frames.append(indices.astype(np.int64))
        spans = torch.as_tensor(np.stack(spans))
        positive, negative = np.stack(positive), np.stack(negative)
        positive_lengths = lengths[:batch_size, None].numpy()
        if (
            (positive < 0).any()
            or (positive >= positive_lengths).any()
            or (negative < 0).any()
            or (negative >= positive_lengths).any()
        ):
            raise ValueError("Saliency frame indices must lie inside their positive window [0, n).")

        if self.pair_mode == "cross_pairs":  # each window once; the model reads pair p's from `video_pair_index`
            pair_video = {"video_features": video, "video_mask": video_mask, "video_pair_index": video_index}
        else:
            pair_video = {"video_features": video[video_index], "video_mask": video_mask[video_index]}
        batch = {
            **pair_video,
            **queries,
            "text_pair_index": query_index,
            "labels": {
                "batch_mode": self.pair_mode,
                "spans": spans,
                "saliency_positive_frames": torch.as_tensor(positive, dtype=torch.int64),
                "saliency_negative_frames": torch.as_tensor(negative, dtype=torch.int64),
            },
        }
        if self.pair_mode == "cross_pairs":
            # Only the positive pairs i·(B + 1) feed the grounding terms; the others need just their window logit.
            batch["grounding_pair_index"] = torch.arange(batch_size) * (batch_size + 1)
        if all(sample.get("noise_seed") is not None for sample in samples):
            for index, sample in enumerate(samples):
                seed = sample["noise_seed"]
                if (
                    isinstance(seed, (bool, np.bool_))
                    or not isinstance(seed, (int, np.integer))
                    or not 0 <= seed < 2**64
                ):
                    raise ValueError(f"Sample {index}'s `noise_seed` must be an integer in [0, 2**64), got {seed!r}.")
            seeds = np.array([int(sample["noise_seed"]) for sample in samples], dtype=np.uint64)
            sample_of_window = video_index.numpy() % batch_size  # negatives are rows B..2B-1 of the same samples
            roles = (video_index.numpy() >= batch_size).astype(np.uint64)
            batch["selector_noise"] = pair_selector_noise(
                seeds[query_index.numpy()], seeds[sample_of_window], roles, 1 + video.shape[1]
            )
        return batch


if not __name__.startswith("transformers_modules"):  # as for the model (end of modeling_rgnet.py)
    AutoProcessor.register(RGNetConfig, RGNetProcessor, exist_ok=True)
RGNetProcessor.register_for_auto_class()


__all__ = [
    "MomentFrames",
    "QUERY_NORMALIZERS",
    "RGNetBatchFeature",
    "RGNetDataCollator",
    "RGNetProcessor",
    "RGNetVideoWindows",
    "RGNetWindowMetadata",
    "RGNetWindowSample",
    "batched_merge_identical_spans",
    "batched_temporal_nms",
    "compute_num_windows",
    "copy_to_device",
    "count_pairs",
    "draw_negative_windows",
    "draw_positive_windows",
    "draw_saliency_frames",
    "enumerate_windows",
    "frame_query_similarities",
    "gather_windows",
    "l2_normalize_text_features",
    "matching_scores",
    "merge_identical_spans",
    "min_max_normalize",
    "moment_to_frames",
    "normalize_ego4d_query",
    "normalize_mad_query",
    "normalize_query",
    "normalize_sentence_embeddings",
    "pair_selector_noise",
    "positive_window_range",
    "positive_window_weights",
    "post_process_queries",
    "post_process_query",
    "prepare_text_features",
    "rank_windows",
    "read_training_example",
    "round_to_4_decimals",
    "sample_training_windows",
    "select_pairs",
    "temporal_iou_matrix",
    "temporal_nms",
    "window_bounds",
    "window_target_spans",
]
