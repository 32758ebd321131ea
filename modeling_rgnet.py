"""PyTorch RGNet: a unified clip-retrieval and grounding network for long videos.

RGNet (Hannan et al., ECCV 2024, arXiv:2312.06729) processes one (query, window) pair at a time: a window of
pre-extracted frame features and the token features of a sentence. It returns a relevance logit for the window
(clip retrieval), `Q` moment proposals inside it (grounding) and per-frame saliency scores. The implementation
specification is `rgnet-spec.md`; section numbers below refer to it.

Reading order follows the forward pass: input projections (§5.1) → position encodings (§5.2) → text-to-video
encoder (§5.3) → frame selector (§5.4) → retrieval encoder (§5.5) → fusion (§5.6) → anchor decoder (§5.7) →
heads and loss (§5.8, §6).

Conventions: masks are 1 = valid, 0 = padding (sequences are padded at the end). Shape symbols: `N` pairs,
`Lv` frames per window, `Lt` text tokens, `Dv`/`Dt` input feature widths, `D` hidden size, `H` attention heads,
`Q` moment queries, `L` decoder layers, `G` grounded pairs. Spans are `(center, width)` normalised by the window's
valid length.

Speed and memory (the numerics are those of the plain formulation up to float32 rounding):

* attention runs PyTorch's fused `scaled_dot_product_attention` (no attention map is kept), except for dropout
  on CPU, which has its own kernel (`_CPUDropoutAttention`); dropout and the feed-forward activation keep boolean
  masks or nothing (`_CPUDropout`, `_ReluDropout`) instead of float copies of the activations; on CPU the
  feed-forward block runs a block of rows at a time without activation-sized gradients (`_CPUFeedForward`), and
  masks come from numpy's PCG64 seeded by torch's generator (`_CPUKeepMasks`), so the same seed gives the same
  masks but not PyTorch's own dropout draws;
* `grounding_pair_index` restricts the decoder, the fusion and the last retrieval-encoder layer's frame rows to the
  pairs whose moments are needed (in `cross_pairs` training, the `B` positives of the `B²` pairs); at inference
  `top_k_windows` chooses them from the window scores (each query's best windows, the ones post-processing keeps);
* `video_pair_index` lets `video_features` hold each distinct window once (many queries on one video; cross-pair
  training batches), projected once unless training with input dropout; `text_pair_index` does the same for the
  query text (a text encoder then runs once per query);
* inference reads some layers' weights directly (`linear_relu`, the decoder's folded cross-attention) where they are
  plain linear layers (`computes_plain_linear`); in float32 on the CPU its linear layers run oneDNN's fused linear
  (`cpu_inference_linear`);
* without gradients or attention dropout (inference) on windows longer than the hidden size (MAD), the retrieval
  encoder's attention runs from the selector's gate (`RGNetSelectorMask`) instead of its written-out `(N, 1, S, S)`
  bias: `selector_attention` corrects bias-free attention with the kernel's log-sum-exp (pairs with padded keys, a
  video's ends, still run under their bias);
* in eval mode without gradients on CUDA, the text-to-video attention runs over each pair's real text tokens alone
  (`RGNetKeyPaddingMask`, `key_padding_attention`: the variable-length flash kernel) instead of under the padding
  bias;
* what these inference paths read on the host (the packed text keys, the pairs with padded keys) is read at the start
  of the forward, and the chosen windows' checks right after the choice: on an accelerator each read waits for the
  queued work, so no read falls between the layers;
* under `torch.compile` the CPU kernels step aside for PyTorch's operators, which the compiler fuses; the parts
  that read values on the host (input and label checks, the choice of the top windows, the factored selector
  attention's kernel choice and padded pairs, the packing of the text keys, the loss with its Hungarian matching)
  run eagerly (`torch.compiler.disable`), the only graph breaks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple

# Sibling modules: relative imports when loaded as remote code from a saved folder, absolute ones from a checkout.
try:
    from .configuration_rgnet import RGNetConfig
    from .loss_rgnet import RGNetLabels, RGNetLoss, validate_labels
except ImportError:
    from configuration_rgnet import RGNetConfig
    from loss_rgnet import RGNetLabels, RGNetLoss, validate_labels

logger = logging.get_logger(__name__)


# ---- Outputs (spec §5.9) ----


@dataclass
class RGNetModelOutput(ModelOutput):
    """Hidden states of [`RGNetModel`] for a batch of `N` (query, window) pairs.

    The per-frame and decoder fields cover the `G` grounded pairs: all `N` pairs (`G = N`) unless `forward` was given
    a `grounding_pair_index` or `choose_grounding_pairs`, in which case row `g` belongs to pair
    `grounding_pair_index[g]`.

    Args:
        decoder_hidden_states (`torch.FloatTensor` of shape `(L, G, Q, D)`):
            Output of every anchor-decoder layer after the decoder's shared final LayerNorm.
        reference_anchors (`torch.FloatTensor` of shape `(L, G, Q, 2)`):
            The `(center, width)` anchor consumed by each decoder layer, in sigmoid space. Layer 0 is the learned
            anchor; layer `l ≥ 1` is the gradient-carrying update made by layer `l − 1`.
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(G, Lv, D)`):
            Frame states after the retrieval encoder and the fusion `M_t + gate_t · g` (the decoder's memory).
        global_hidden_state (`torch.FloatTensor` of shape `(N, D)`):
            The global (retrieval) token after the retrieval encoder.
        frame_selection (`torch.FloatTensor` of shape `(N, Lv)`):
            Hard 0/1 gate of the frame selector (straight-through gradient in training).
        selector_logits (`torch.FloatTensor` of shape `(N, Lv)`):
            Noisy selector logits `z + η` in training; the hard gate in eval mode (the original's convention).
        selector_raw_logits (`torch.FloatTensor` of shape `(N, 1 + Lv)`):
            Selector logits `z` before noise and thresholding; column 0 is the global token.
        text_features (`torch.FloatTensor` of shape `(N, Lt, Dt)`):
            The query token features that were used (computed by the text encoder when `input_ids` were given).
        text_mask (`torch.FloatTensor` of shape `(N, Lt)`):
            Their validity mask.
        grounding_pair_index (`torch.LongTensor` of shape `(G,)`, *optional*):
            The pairs the `G`-row fields belong to; `None` when every pair was grounded (`G = N`).
    """

    decoder_hidden_states: torch.FloatTensor | None = None
    reference_anchors: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    global_hidden_state: torch.FloatTensor | None = None
    frame_selection: torch.FloatTensor | None = None
    selector_logits: torch.FloatTensor | None = None
    selector_raw_logits: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    text_mask: torch.FloatTensor | None = None
    grounding_pair_index: torch.LongTensor | None = None


@dataclass
class RGNetVideoGroundingOutput(ModelOutput):
    """Predictions of [`RGNetForVideoGrounding`] for a batch of `N` (query, window) pairs.

    Moment predictions, saliency and decoder states cover the `G` grounded pairs: all `N` pairs (`G = N`) unless
    `forward` was given a `grounding_pair_index` or `top_k_windows`, in which case row `g` belongs to pair
    `grounding_pair_index[g]`. `window_logits`, `frame_selection`, `selector_logits` and `global_hidden_state` always
    cover all `N` pairs.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Weighted sum of the loss terms (spec §6.4).
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            Unweighted loss terms (`loss_span`, `loss_giou`, `loss_label`, `loss_saliency`, `loss_retrieval`, and
            `loss_{span,giou,label}_{l}` for auxiliary decoder layers) plus logging-only `class_error` metrics.
        logits (`torch.FloatTensor` of shape `(G, Q, 2)`):
            Class logits of the last decoder layer; index 0 = foreground (a moment), 1 = background.
        pred_spans (`torch.FloatTensor` of shape `(G, Q, 2)`):
            `(center, width)` of each moment proposal in (0, 1), relative to the window's valid length.
        window_logits (`torch.FloatTensor` of shape `(N, 1)`):
            Window relevance (clip retrieval) logit; the window score is its sigmoid.
        saliency_scores (`torch.FloatTensor` of shape `(G, Lv)`):
            Per-frame saliency, computed at every position (padded ones included; the paired-negative loss reads
            them all), in the model's compute dtype (bfloat16 with bfloat16 weights, where `logits`, `pred_spans`
            and `window_logits` are float32).
        frame_selection (`torch.FloatTensor` of shape `(N, Lv)`):
            Hard 0/1 gate of the frame selector.
        selector_logits (`torch.FloatTensor` of shape `(N, Lv)`):
            Noisy selector logits in training, the hard gate in eval mode.
        auxiliary_outputs (`list[dict[str, torch.FloatTensor]]`):
            For decoder layers `0 … L−2`, a dict with `logits` and `pred_spans` of shape `(G, Q, 2)`.
        reference_anchors (`torch.FloatTensor` of shape `(L, G, Q, 2)`):
            Anchor consumed by each decoder layer (see [`RGNetModelOutput`]).
        decoder_hidden_states (`torch.FloatTensor` of shape `(L, G, Q, D)`):
            Normalised output of every decoder layer.
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(G, Lv, D)`):
            Fused frame states (decoder memory).
        global_hidden_state (`torch.FloatTensor` of shape `(N, D)`):
            Global token after the retrieval encoder.
        grounding_pair_index (`torch.LongTensor` of shape `(G,)`, *optional*):
            The pairs the `G`-row fields belong to; `None` when every pair was grounded (`G = N`).
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_spans: torch.FloatTensor | None = None
    window_logits: torch.FloatTensor | None = None
    saliency_scores: torch.FloatTensor | None = None
    frame_selection: torch.FloatTensor | None = None
    selector_logits: torch.FloatTensor | None = None
    auxiliary_outputs: list | None = None
    reference_anchors: torch.FloatTensor | None = None
    decoder_hidden_states: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    global_hidden_state: torch.FloatTensor | None = None
    grounding_pair_index: torch.LongTensor | None = None


# ---- Pure functions: logit, position encodings, attention bias, attention ----


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """`log(x / (1 − x))` with `x` clamped to [0, 1] and both terms clamped below at `eps` (spec conventions)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """`dtype` if it is float32 or wider (float64 stays float64), else float32 (bfloat16 and float16 go up)."""
    return torch.promote_types(dtype, torch.float32)


def run_head_in_float32(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Run a small prediction head in float32 or wider, outside autocast and with its weights upcast if narrower.

    Moments are read to a fraction of a frame and scores to 4 decimals: a bfloat16 output (8-bit mantissa) would
    quantise a span centre to about two frames of a 900-frame window and tie close window scores. The heads see
    `(..., Q, D)` or `(N, D)` inputs, so float32 costs nothing measurable next to the trunk, whether the trunk runs
    under bf16 autocast or has bfloat16 weights itself (gradients reach those weights through the cast). A float64
    model keeps float64 (`gradcheck`, numerical checks): the head computes in the widest of float32, the input's
    dtype and its weights' dtypes.

    Args:
        head (`nn.Module`): the head, e.g. an [`RGNetMLP`].
        hidden (`torch.Tensor` of shape `(..., D)`): its input.

    Returns:
        `torch.Tensor` of shape `(..., D_out)`, in float32 or the wider dtype.
    """
    with torch.autocast(hidden.device.type, enabled=False):
        parameters = dict(head.named_parameters())
        dtype = at_least_float32(hidden.dtype)
        for parameter in parameters.values():
            dtype = torch.promote_types(dtype, parameter.dtype)
        if all(parameter.dtype == dtype for parameter in parameters.values()):
            return head(hidden.to(dtype))
        upcast = {name: parameter.to(dtype) for name, parameter in parameters.items()}
        return torch.func.functional_call(head, upcast, (hidden.to(dtype),))


def computes_plain_linear(linear: nn.Module) -> bool:
    """Whether `linear` computes exactly `F.linear(x, weight, bias)`, so that its weights may be used directly.

    Inference forms that read a layer's weights instead of calling it (`linear_relu`, the decoder's folded
    cross-attention) are used only then: a PEFT adapter or quantised layer replaces the module, accelerate wraps its
    `forward`, a forward hook changes its output.
    """
    return (
        type(linear) in (nn.Linear, RGNetXavierLinear)
        and linear.bias is not None
        and not linear._forward_hooks
        and not linear._forward_pre_hooks
        and "forward" not in vars(linear)
        and not hasattr(linear, "_hf_hook")
    )


def cpu_inference_linear(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor | None:
    """`activation(F.linear(hidden, weight, bias))` through oneDNN's fused linear, for float32 CPU inference; `None`
    where it does not apply (another device or dtype, autocast, a gradient to compute, oneDNN off).

    PyTorch's CPU `addmm` copies the bias into the output and then accumulates the product onto it; oneDNN adds the
    bias (and the activation, `"relu"`) as the product is written, and ran the model's linear layers about twice as
    fast on the project's 2-core CPU. The sums run in another order, so results differ by float32 rounding.
    """
    if (
        torch.compiler.is_compiling()  # the compiler fuses linear layers itself
        or not all(
            t.device.type == "cpu" and t.dtype == torch.float32 for t in (hidden, weight, bias) if t is not None
        )
        or torch.is_autocast_enabled("cpu")
        or (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)))
        or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    ):
        return None
    rows = hidden.reshape(-1, hidden.shape[-1])
    output = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, activation, [], "")
    return output.reshape(*hidden.shape[:-1], weight.shape[0])


def linear_relu(hidden: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """`relu(linear(hidden))` for 2-D `hidden` without a gradient, the ReLU inside the matrix product where the BLAS
    library can fuse it (cuBLASLt's bias + ReLU epilogue on CUDA); a plain `relu(linear(hidden))` unless
    [`computes_plain_linear`].

    The feed-forward block's `(N·L, ffn_dim)` activation is the largest tensor of inference (8× the hidden states):
    a separate ReLU reads and writes it once more, 12% of the memory traffic of a MAD query. Under autocast the
    operands are cast as autocast casts a linear layer's, whether or not it lists the fused operator.
    """
    if not computes_plain_linear(linear):
        return F.relu(linear(hidden))
    weight, bias = linear.weight, linear.bias
    fused = cpu_inference_linear(hidden, weight, bias, "relu")
    if fused is not None:
        return fused
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight, bias = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
    return torch._addmm_activation(bias, hidden, weight.t())


def video_sine_position_encoding(video_mask: torch.Tensor, hidden_size: int, temperature: float) -> torch.Tensor:
    """Fixed sine encoding of frame positions normalised by each window's valid length (spec §5.2).

    Frame `t` of a window with `n` valid frames sits at `p_t = 2π (t + 1) / (n + 1e-6)`; padded frames repeat the
    last valid position. Features `2k` and `2k + 1` are `sin` and `cos` of `p_t / temperature^(2k / D)`.

    Args:
        video_mask (`torch.Tensor` of shape `(N, Lv)`): 1 = valid frame.
        hidden_size (`int`): `D`, the number of features.
        temperature (`float`): `τ` (MAD 100, Ego4D 10000).

    Returns:
        `torch.FloatTensor` of shape `(N, Lv, D)`.
    """
    positions = video_mask.float().cumsum(dim=1)  # (N, Lv)
    positions = positions / (positions[:, -1:] + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(hidden_size, dtype=torch.float32, device=video_mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / hidden_size)
    angles = positions[:, :, None] / dim_t  # (N, Lv, D)
    return torch.stack((angles[:, :, 0::2].sin(), angles[:, :, 1::2].cos()), dim=3).flatten(2)


def anchor_sine_embedding(anchors: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """Sine embedding of `(center, width)` anchors, `D/2` features per coordinate (spec §5.7 step 1).

    For a coordinate `x` and `k = 0 … D/4 − 1`, features `2k`, `2k + 1` are `sin`, `cos` of
    `2π x / 10000^(4k / D)`; the center block comes first, then the width block.

    Args:
        anchors (`torch.Tensor` of shape `(N, Q, 2)`): anchors in sigmoid space.
        hidden_size (`int`): `D`.

    Returns:
        `torch.FloatTensor` of shape `(N, Q, D)`.
    """
    features_per_coordinate = hidden_size // 2
    dim_t = torch.arange(features_per_coordinate, dtype=torch.float32, device=anchors.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / features_per_coordinate)
    angles = anchors[..., None] * (2 * math.pi) / dim_t  # (N, Q, 2, D/2)
    embedding = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
    return embedding.flatten(-2)  # (N, Q, D): [center block; width block]


def padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive key bias from a validity mask: 0 for valid keys, the dtype's minimum for padding.

    Args:
        mask (`torch.Tensor` of shape `(N, Lk)`): 1 = valid key.
        dtype (`torch.dtype`): the attention compute dtype.

    Returns:
        `torch.Tensor` of shape `(N, 1, 1, Lk)`, broadcastable over heads and queries.
    """
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(~mask.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]


def build_selector_attention_bias(
    frame_gate: torch.Tensor, sequence_mask: torch.Tensor, mode: str, dtype: torch.dtype
) -> torch.Tensor:
    """Attention bias of the retrieval encoder from the frame selector's gate and padding (spec §5.5).

    `"additive_unit_bias"` (the released checkpoints): the row of every non-selected frame gets `+1` on every key
    but itself. `"hard_mask"` (the paper): the row of every non-selected frame may attend only to itself. The
    global token (position 0) is always treated as selected. Padded keys are excluded in both modes, and padded rows
    keep the padding bias alone (in the hard mode a padded row would otherwise have no key left).

    Softmax ignores a constant added to a whole row, so the additive mode is built as `−1` on the diagonal of each
    non-selected row (same attention weights): the bias is then the keys' padding written once plus a diagonal,
    instead of an `(N, S, S)` boolean mask and two passes over the bias, which dominated long-window inference.

    Args:
        frame_gate (`torch.Tensor` of shape `(N, 1 + Lv)`): hard 0/1 gate, global token first (no gradient used).
        sequence_mask (`torch.Tensor` of shape `(N, 1 + Lv)`): 1 = valid position.
        mode (`str`): `"additive_unit_bias"` or `"hard_mask"`.
        dtype (`torch.dtype`): the attention compute dtype.

    Returns:
        `torch.Tensor` of shape `(N, 1, 1 + Lv, 1 + Lv)` (rows = queries, columns = keys).
    """
    if mode not in ("additive_unit_bias", "hard_mask"):
        raise ValueError(f"Unknown `selector_attention_mode` {mode!r}.")
    not_selected = frame_gate.detach() < 0.5
    not_selected[:, 0] = False  # the global token counts as selected
    valid = sequence_mask.bool()
    num_pairs, length = not_selected.shape
    minimum = torch.finfo(dtype).min
    key_bias = padding_bias(valid, dtype)[:, 0]  # (N, 1, S)
    # Rows padded to a multiple of 8 elements: CUDA's memory-efficient attention then reads the bias in place
    # instead of copying it into an aligned buffer in every layer.
    padded_length = -(-length // 8) * 8
    bias = torch.empty(num_pairs, length, padded_length, dtype=dtype, device=valid.device)[..., :length]
    own_key_valid = not_selected & valid  # rows whose own (valid) key gets the diagonal term
    if mode == "additive_unit_bias":
        bias.copy_(key_bias.expand(-1, length, -1))
        bias.diagonal(dim1=1, dim2=2).sub_(own_key_valid.to(dtype))
    else:
        # Only valid rows: a padded non-selected row would have no key left, which fused kernels and the math kernel
        # fill differently (zeros / uniform weights); it keeps the padding bias, as in the additive mode.
        bias.copy_(torch.where(own_key_valid[:, :, None], minimum, key_bias))
        bias.diagonal(dim1=1, dim2=2).masked_fill_(own_key_valid, 0.0)
    return bias[:, None]


# Share of a non-selected row's weight on its own key that the additive selector bias (`−1` on that logit) removes.
_OWN_KEY_SHRINK = 1.0 - math.exp(-1.0)


@torch.compiler.disable  # reads values (`nonzero`): eager under `torch.compile`
def pairs_with_padded_frames(mask: torch.Tensor, pair_index: torch.Tensor | None = None) -> torch.Tensor:
    """The pairs whose keys include padding, `(P,)` ascending: rows of `mask` `(N, L)` (1 = real) with a 0, or with
    `pair_index` `(N,)` the pairs whose row `pair_index[n]` has one (a long video's first window and its last one or
    two). Reads the device once (`nonzero`)."""
    padded = (mask == 0).any(dim=1)
    if pair_index is not None:
        padded = padded[pair_index]
    return padded.nonzero().squeeze(1)


@dataclass(eq=False)
class RGNetSelectorMask:
    """The retrieval encoder's attention mask in factored form: the frame selector's gate and the padding, from which
    [`selector_attention`] computes the attention of [`build_selector_attention_bias`] without writing out its
    `(N, 1, S, S)` bias for the pairs without padded keys (on a GPU that bias rules out the flash kernel and is read
    again for every head). Passed where the bias would go when no gradient and no attention dropout are needed
    (inference); training writes the bias.

    Args:
        frame_gate (`torch.Tensor` of shape `(N, S)`), sequence_mask (`(N, S)`), mode (`str`): as in
            [`build_selector_attention_bias`].
        global_only (`bool`): the attention's queries are the global row alone (keys span every token).
        penalised_rows (`torch.Tensor` of shape `(N, S)`, *optional*): the valid non-selected rows, derived from the
            gate and the padding when not given.
        padded_pairs (`torch.LongTensor` of shape `(P,)`, *optional*): the pairs with padded keys, derived from the
            padding when not given ([`pairs_with_padded_frames`]). Deriving them reads the device (`nonzero`), which
            mid-forward stalls it until the host has queued the next layers: the model reads them at the start of its
            forward instead, while the device is idle, and passes them.
    """

    frame_gate: torch.Tensor
    sequence_mask: torch.Tensor
    mode: str
    global_only: bool = False
    penalised_rows: torch.Tensor | None = field(default=None, repr=False)
    padded_pairs: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.mode not in ("additive_unit_bias", "hard_mask"):
            raise ValueError(f"Unknown `selector_attention_mode` {self.mode!r}.")
        if self.penalised_rows is None:
            # Rows whose attention the selector changes (in a pair without padding, where the factored form is used);
            # the global token counts as selected.
            not_selected = self.frame_gate.detach() < 0.5
            not_selected[:, 0] = False
            self.penalised_rows = not_selected & self.sequence_mask.bool()  # (N, S)
        if self.padded_pairs is None:
            self.padded_pairs = pairs_with_padded_frames(self.sequence_mask)

    def pairs(self, index: torch.Tensor) -> RGNetSelectorMask:
        """The mask of pairs `index`."""
        return RGNetSelectorMask(self.frame_gate[index], self.sequence_mask[index], self.mode, self.global_only)

    def global_row(self) -> RGNetSelectorMask:
        """The mask of the global row's attention (queries: the global token alone)."""
        # The derived tensors are the same: no second pass over the gate. (Built, not `copy.copy`-ed: `torch.compile`
        # traces a constructor but breaks its graph at `copy.copy` in some PyTorch versions.)
        return RGNetSelectorMask(
            self.frame_gate, self.sequence_mask, self.mode, True, self.penalised_rows, self.padded_pairs
        )

    def to(self, device: torch.device | str) -> RGNetSelectorMask:
        """The mask on `device` (a layer on another GPU under a `device_map`); itself when already there."""
        if self.frame_gate.device == torch.device(device):
            return self
        tensors = (self.frame_gate, self.sequence_mask, self.penalised_rows, self.padded_pairs)
        gate, sequence_mask, penalised_rows, padded_pairs = (tensor.to(device) for tensor in tensors)
        return RGNetSelectorMask(gate, sequence_mask, self.mode, self.global_only, penalised_rows, padded_pairs)

    def bias(self, dtype: torch.dtype, pair_index: torch.Tensor | None = None) -> torch.Tensor:
        """The written-out bias, `(N, 1, S, S)` or `(N, 1, 1, S)` with `global_only`; of pairs `pair_index` if given."""
        gate, mask = self.frame_gate, self.sequence_mask
        if pair_index is not None:
            gate, mask = gate[pair_index], mask[pair_index]
        bias = build_selector_attention_bias(gate, mask, self.mode, dtype)
        return bias[:, :, :1] if self.global_only else bias


def logsumexp_attention_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> str | None:
    """Which of PyTorch's fused attention kernels that return the log-sum-exp can run bias-free attention of these
    `(N, H, L, d)` inputs: `"flash"` or `"efficient"` (CUDA, as `scaled_dot_product_attention` would allow them,
    backend switches such as `sdpa_kernel` included), `"cpu_flash"`, or `None`."""
    if query.device.type == "cpu":  # the flash switch governs PyTorch's CPU kernel too
        usable = torch.backends.cuda.flash_sdp_enabled() and query.dtype in (torch.float32, torch.bfloat16)
        return "cpu_flash" if usable else None
    if query.device.type != "cuda":
        return None
    params = torch.backends.cuda.SDPAParams(query, key, value, None, 0.0, False, False)
    # `can_use_flash_attention` accepts any head width up to 256: `scaled_dot_product_attention` pads the others to a
    # multiple of 8 before calling the kernel, which rejects them when called directly, as here.
    if (
        torch.backends.cuda.flash_sdp_enabled()
        and query.shape[-1] % 8 == 0
        and torch.backends.cuda.can_use_flash_attention(params)
    ):
        return "flash"
    if torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.can_use_efficient_attention(params):
        return "efficient"
    return None


def _attention_with_logsumexp(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """Bias-free attention of `(N, H, L, d)` inputs and its float32 log-sum-exp per row `(N, H, L)`, from the kernel
    [`logsumexp_attention_kernel`] picks; `None` where there is none."""
    kernel = logsumexp_attention_kernel(query, key, value)
    if kernel == "cpu_flash":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value)
    if kernel == "flash":
        return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value)[:2]
    if kernel == "efficient":
        output, lse = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, None, True)[:2]
        return output, lse[..., : query.shape[2]]  # CUDA pads the rows of this kernel's log-sum-exp
    return None


def selector_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: RGNetSelectorMask, num_heads: int
) -> torch.Tensor:
    """The retrieval encoder's self-attention under the frame selector's mask, bias-free where the keys are unpadded.

    The same function as `multi_head_attention` under `mask.bias(...)`. For the pairs without padded keys, attention
    runs bias-free and returns each row's log-sum-exp `lse_i`; then every non-selected frame's row `i` is corrected:
    in the additive mode its own logit `s_ii` lost `1`, so the weight `e^{−1}` of its own key's share
    `a_i = (1 − e^{−1}) exp(s_ii − lse_i)` comes out of the softmax, `out_i ← (out_i − a_i v_i) / (1 − a_i)`; in the
    hard mode the row attends to itself alone, `out_i ← v_i`. The global row is never corrected (the global token
    counts as selected). `s_ii` is summed from exact float32 products of the inputs, as the kernel's scores are. Pairs
    with padded keys (a long video's first window and its last one or two) are computed again under their bias; where
    more than half the pairs are padded, or no kernel returns the log-sum-exp ([`logsumexp_attention_kernel`]), all
    are.

    Under `torch.compile` the kernel choice and the padded pairs run eagerly (they read values on the host), while the
    row correction, elementwise work over `(N, S, H·d)` tensors, is compiled into one pass over them.

    Args:
        query (`torch.Tensor` of shape `(N, Lq, H·d)`): rows `0..Lq−1` of the sequence (`Lq = 1` with
            `mask.global_only`), key, value (`(N, S, H·d)`): already projected.
        mask ([`RGNetSelectorMask`]), num_heads (`int`): `H`.

    Returns:
        `torch.Tensor` of shape `(N, Lq, H·d)`.
    """
    mask = mask.to(query.device)
    split = [rearrange(x, "n l (h d) -> n h l d", h=num_heads) for x in (query, key, value)]
    attended, lse = _bias_free_selector_attention(*split, mask)
    if lse is None:  # computed under the bias: exact as it is
        return rearrange(attended, "n h l d -> n l (h d)")
    if not mask.global_only:
        rows = mask.penalised_rows[:, None, :, None]  # (N, 1, S, 1)
        if mask.mode == "hard_mask":
            attended = torch.where(rows, split[2], attended)
        else:
            # Products of bfloat16 values are exact in float32; rounding them to bfloat16 first would put errors of
            # about 2⁻⁹ |s_ii| into a_i.
            products = query.float() * key  # (N, S, H·d)
            own_logit = products.unflatten(-1, (num_heads, -1)).sum(-1).transpose(1, 2) * split[0].shape[-1] ** -0.5
            removed = (_OWN_KEY_SHRINK * torch.exp(own_logit - lse))[..., None] * rows  # a_i, 0 on other rows
            # (out − a v) / (1 − a) is out + w (v − out) with w = −a / (1 − a): one pass.
            attended = torch.lerp(attended, split[2], (-removed / (1.0 - removed)).to(attended.dtype))
    return rearrange(_with_padded_pairs_exact(attended, *split, mask), "n h l d -> n l (h d)")


@torch.compiler.disable  # chooses a kernel from the inputs and the number of padded pairs: eager under `torch.compile`
def _bias_free_selector_attention(query, key, value, mask: RGNetSelectorMask):
    """`(attended, lse)` of [`selector_attention`]'s `(N, H, L, d)` inputs: bias-free attention and its float32
    log-sum-exp `(N, H, Lq)`, or `(attention under the written-out bias, None)` where more than half the pairs have
    padded keys or no kernel returns the log-sum-exp."""
    fused = None if 2 * len(mask.padded_pairs) > query.shape[0] else _attention_with_logsumexp(query, key, value)
    if fused is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask.bias(query.dtype)), None
    return fused


@torch.compiler.disable  # indexes the pairs with padded keys, whose number is read on the host
def _with_padded_pairs_exact(attended, query, key, value, mask: RGNetSelectorMask):
    """`attended` `(N, H, Lq, d)` with the rows of the pairs with padded keys computed again under their bias."""
    padded = mask.padded_pairs
    if not len(padded):
        return attended
    exact = F.scaled_dot_product_attention(
        query[padded], key[padded], value[padded], attn_mask=mask.bias(query.dtype, padded)
    )
    return attended.index_copy_(0, padded, exact)  # `attended` is this attention's own (kernel or correction output)


@dataclass(eq=False)
class RGNetKeyPaddingMask:
    """The text-to-video attention's mask in factored form: which text tokens of each pair are real. In eval mode
    without gradients, where CUDA's flash kernel can run the inputs, [`key_padding_attention`] attends to each pair's
    real tokens alone (its variable-length form) instead of adding the `(N, 1, 1, Lk)` padding bias, which rules the
    flash kernel out (a MAD forward's 1,296 pairs × 900 frames then ran cuDNN's biased kernel over at most 25 keys).

    Args:
        key_mask (`torch.Tensor` of shape `(N, Lk)`): 1 = real key; every pair has one at least.
        packed (`bool`, *optional*, defaults to `True`): allow the variable-length kernel (`False`: always the bias;
            the model passes `False` in training mode).
    """

    key_mask: torch.Tensor
    packed: bool = True
    _packed_keys: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The padding bias `(N, 1, 1, Lk)` ([`padding_bias`])."""
        return padding_bias(self.key_mask, dtype)

    def to(self, device: torch.device | str) -> RGNetKeyPaddingMask:
        """The mask on `device` (a layer on another GPU under a `device_map`); itself when already there. Packed keys
        already read go along, so the layers there do not read them again."""
        if self.key_mask.device == torch.device(device):
            return self
        moved = RGNetKeyPaddingMask(self.key_mask.to(device), self.packed)
        if self._packed_keys is not None:
            moved._packed_keys = tuple(tensor.to(device) for tensor in self._packed_keys)
        return moved

    def may_pack(self, dtype: torch.dtype) -> bool:
        """Whether [`key_padding_attention`] may run the variable-length kernel on this mask for inputs of `dtype`
        (its conditions known before the inputs exist: packing allowed, no gradient, CUDA, a half-precision dtype
        flash takes; the kernel check on the inputs comes later)."""
        return (
            self.packed
            and not torch.is_grad_enabled()
            and self.key_mask.device.type == "cuda"
            and dtype in (torch.float16, torch.bfloat16)
        )

    @torch.compiler.disable  # reads values (`nonzero`)
    def packed_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(index, offsets)`: the real keys' rows of the flattened `(N·Lk)` keys, pair by pair, and the int32 offsets
        `(N + 1,)` of each pair's first one among them. Computed once per mask, for every layer that reads it."""
        if self._packed_keys is None:
            real = self.key_mask.bool()
            offsets = F.pad(real.sum(dim=1).cumsum(0), (1, 0)).to(torch.int32)
            self._packed_keys = (real.flatten().nonzero().squeeze(1), offsets)
        return self._packed_keys


def key_padding_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: RGNetKeyPaddingMask,
    num_heads: int,
    dropout: float,
) -> torch.Tensor:
    """`multi_head_attention` under `mask`'s padding bias, computed over each pair's real keys alone where it can.

    Where `mask.packed` (the model sets it in eval mode), without gradients or dropout, on CUDA inputs the flash kernel
    runs, it is the variable-length flash kernel: the queries of pair `n` attend to its real keys only, packed (the
    same function: padded keys get no weight under the bias). Everywhere else, SDPA with the bias.

    Args:
        query (`torch.Tensor` of shape `(N, Lq, H·d)`), key, value (`(N, Lk, H·d)`): already projected.
        mask ([`RGNetKeyPaddingMask`]), num_heads (`int`): `H`; dropout (`float`): on the attention probabilities.

    Returns:
        `torch.Tensor` of shape `(N, Lq, H·d)`.
    """
    if dropout == 0 and query.device.type == "cuda" and mask.may_pack(query.dtype):
        attended = _packed_key_attention(query, key, value, mask.to(query.device), num_heads)
        if attended is not None:
            return attended
    return multi_head_attention(query, key, value, mask.bias(query.dtype).to(query.device), num_heads, dropout)


@torch.compiler.disable  # chooses the kernel from the inputs and packs keys whose number is read on the host
def _packed_key_attention(query, key, value, mask: RGNetKeyPaddingMask, num_heads: int) -> torch.Tensor | None:
    """[`key_padding_attention`] on the variable-length flash kernel; `None` where the flash kernel cannot run."""
    split = [rearrange(x, "n l (h d) -> n h l d", h=num_heads) for x in (query, key, value)]
    if logsumexp_attention_kernel(*split) != "flash":
        return None
    num_pairs, query_length, width = query.shape
    index, key_offsets = mask.packed_keys()
    keys, values = (x.flatten(0, 1).index_select(0, index).unflatten(-1, (num_heads, -1)) for x in (key, value))
    query_offsets = torch.arange(
        0, (num_pairs + 1) * query_length, query_length, dtype=torch.int32, device=query.device
    )  # every pair's queries: its `Lq` rows
    attended = torch.ops.aten._flash_attention_forward(
        query.reshape(num_pairs * query_length, num_heads, -1),  # (N·Lq, H, d): a view of the projection
        keys,  # (real keys, H, d)
        values,
        query_offsets,
        key_offsets,
        query_length,
        key.shape[1],  # a bound on any pair's real keys
        0.0,
        False,
        False,
    )[0]
    return attended.reshape(num_pairs, query_length, width)


def emulated_text_mask_head_ordering_bias(
    video_mask: torch.Tensor, text_mask: torch.Tensor, num_heads: int, dtype: torch.dtype
) -> torch.Tensor:
    """Text-to-video bias reproducing the original implementation's head-ordering quirk (spec §5.3).

    The original builds a `(N·H, Lv, Lt)` mask head-major and the attention kernel reads it batch-major, so pair
    `n`, head `h` blocks text token `j` for frame `t` when frame `t` and token `j` are both padding in pair
    `m = (n·H + h) mod N`. Each pair's own text padding is excluded as usual. Opt-in, for parity only.

    Returns:
        `torch.Tensor` of shape `(N, H, Lv, Lt)`.
    """
    num_pairs = video_mask.shape[0]
    donor = (
        torch.arange(num_pairs, device=video_mask.device)[:, None] * num_heads
        + torch.arange(num_heads, device=video_mask.device)[None, :]
    ) % num_pairs  # (N, H)
    padded_rows = ~video_mask.bool()[donor]  # (N, H, Lv)
    padded_tokens = ~text_mask.bool()[donor]  # (N, H, Lt)
    blocked = padded_rows[..., :, None] & padded_tokens[..., None, :]  # (N, H, Lv, Lt)
    blocked = blocked | ~text_mask.bool()[:, None, None, :]
    return torch.zeros(blocked.shape, dtype=dtype, device=video_mask.device).masked_fill(
        blocked, torch.finfo(dtype).min
    )


def multi_head_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_bias: torch.Tensor | None,
    num_heads: int,
    dropout: float,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention over already projected inputs; the one attention kernel of the model.

    Query and key may be wider than value (the decoder's conditional cross-attention concatenates content and sine
    parts per head); the scale is `1/sqrt(query head width)` unless `scale` is given. Runs PyTorch's
    `scaled_dot_product_attention` (fused flash / memory-efficient kernels that keep no attention map), except for
    dropout on CPU outside `torch.compile`: PyTorch's only CPU kernel with dropout keeps several float maps per
    layer (about 5 GB per MAD encoder layer at 64 pairs), so there [`_CPUDropoutAttention`] computes the same
    function pair by pair (all but tiny maps).

    Args:
        query (`torch.Tensor` of shape `(N, Lq, H·Dqk)`), key (`(N, Lk, H·Dqk)`), value (`(N, Lk, H·Dv)`).
        attention_bias (`torch.Tensor` broadcastable to `(N, H, Lq, Lk)`, *optional*): added to the scaled logits;
            it receives no gradient (it is built from masks and the detached gate).
        num_heads (`int`): `H`.
        dropout (`float`): dropout on attention probabilities (pass 0 in eval mode).
        scale (`float`, *optional*): factor of the logits; defaults to `1/sqrt(Dqk)`.

    Returns:
        `torch.Tensor` of shape `(N, Lq, H·Dv)`.
    """
    query = rearrange(query, "n l (h d) -> n h l d", h=num_heads)
    key = rearrange(key, "n l (h d) -> n h l d", h=num_heads)
    value = rearrange(value, "n l (h d) -> n h l d", h=num_heads)
    if attention_bias is not None:
        attention_bias = attention_bias.to(query.dtype)
    if (
        dropout > 0
        and query.device.type == "cpu"
        and not torch.compiler.is_compiling()  # compiled code takes PyTorch's kernel
        and num_heads * query.shape[2] * key.shape[2] >= _CPUDropoutAttention.min_map_elements
    ):
        # Computed in float32 or wider; returned in the inputs' dtype (a model with bfloat16 weights reads it next).
        attended = _CPUDropoutAttention.apply(query, key, value, attention_bias, dropout, scale).to(value.dtype)
    else:
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_bias, dropout_p=dropout, scale=scale
        )
    return rearrange(attended, "n h l d -> n l (h d)")


# ---- Training kernels: the same functions as PyTorch's, with less memory on CPU ----


class _CPUKeepMasks:
    """Dropout keep masks for the CPU training kernels: Bernoulli(1 − p), drawn fast and seeded by torch.

    PyTorch's CPU generator (one Mersenne-Twister call per element, on one core) made mask drawing about a fifth of a
    MAD training step. Here each kernel call takes one 62-bit seed from torch's global generator (so
    `torch.manual_seed` / `set_seed` still decide every mask, and per-rank seeding carries over) and draws 16-bit
    words from numpy's default bit generator (PCG64), four per 64-bit output, about six times faster: an element is
    kept where its word is `≥ round(p · 2¹⁶)`, so the drop probability is `p` to within `2⁻¹⁷` (PyTorch's float32
    `u ≥ p` has 24 bits; either is far below the sampling noise of one mask). Masks come out in call order, so a
    kernel that draws block by block (blocks of a multiple of 4 elements) gets the same masks for the same seed.
    """

    def __init__(self, dropout: float):
        seed = int(torch.randint(0, 1 << 62, (1,)).item())  # the global CPU generator
        self._bits = np.random.PCG64(seed)
        self._threshold = np.uint16(min(round(dropout * 2**16), 2**16 - 1))

    def fill_(self, keep: torch.Tensor) -> torch.Tensor:
        """Fill a contiguous CPU boolean tensor with the next `keep.numel()` keep decisions, in place."""
        if not keep.is_contiguous():
            raise ValueError("`_CPUKeepMasks.fill_` needs a contiguous boolean tensor (it writes through a view).")
        flat = keep.numpy().reshape(-1)
        words = self._bits.random_raw((flat.size + 3) // 4).view(np.uint16)[: flat.size]
        np.greater_equal(words, self._threshold, out=flat)
        return keep


# Elements per slice of the slice-wise dropout kernels (4 MB of float32: a slice stays in cache while it is used).
_SLICE_ELEMENTS = 1 << 20


def _slices(numel: int) -> list[tuple[int, int]]:
    """`(start, end)` covering `[0, numel)` in pieces of `_SLICE_ELEMENTS`."""
    return [(start, min(start + _SLICE_ELEMENTS, numel)) for start in range(0, numel, _SLICE_ELEMENTS)]


class _CPUDropoutAttention(torch.autograd.Function):
    """Attention with dropout on the probabilities, computed block by block (CPU training).

    `P = softmax(Q Kᵀ / sqrt(Dqk) + bias)`, `out = (P ⊙ M) V / (1 − p)` with `M` a Bernoulli(1 − p) keep mask
    ([`_CPUKeepMasks`], drawn block after block): the function of PyTorch's math path. Each block (a few heads of
    one pair when its map is large, whole pairs when maps are small) goes through reused scratch buffers small
    enough to stay in cache, reading a one-pair block's projections in their `(N, L, H, D)` layout without copies.
    The backward recomputes the block's `P` (the same kernels on the same inputs give the same values) and keeps
    only `M`, packed 8 per byte (52 MB for a MAD encoder layer at 64 pairs, where PyTorch's math path keeps several
    float maps of 1.7 GB each). It uses `rowsum(dP ⊙ P) = rowsum(dout ⊙ out)`. Reduced-precision inputs are
    computed in float32, float64 inputs in float64.
    """

    # Used for maps of at least this many elements per pair: faster than PyTorch's kernel from the global-token row
    # (8·901) up; the decoder's tiny self-attention maps (8·5·5) are cheaper there.
    min_map_elements = 1 << 12
    # Elements of one block's score map (4 MB): a few heads of a pair with a large map, otherwise as many whole
    # pairs as fit (one Python step per block: small maps are not computed pair by pair).
    _block_elements = 1 << 20

    @staticmethod
    def _blocks(num_pairs: int, num_heads: int, map_elements: int) -> list[tuple[slice, slice]]:
        """`(pairs, heads)` blocks covering `(N, H)` in order, each holding at most `_block_elements` map entries
        (at least one head): heads of one pair, or whole consecutive pairs."""
        heads = min(num_heads, max(1, _CPUDropoutAttention._block_elements // map_elements))
        if heads < num_heads:
            return [
                (slice(pair, pair + 1), slice(head, head + heads))
                for pair in range(num_pairs)
                for head in range(0, num_heads, heads)
            ]
        pairs = max(1, _CPUDropoutAttention._block_elements // (num_heads * map_elements))
        return [(slice(pair, pair + pairs), slice(0, num_heads)) for pair in range(0, num_pairs, pairs)]

    @staticmethod
    def _rows(tensor, block):
        """The block's `(pairs·heads, L, D)` rows of an `(N, H, L, D)` tensor: a view for one pair, else a copy."""
        return tensor[block].flatten(0, 1)

    @staticmethod
    def _bmm_into(destination, block, left, right, factor):
        """`destination[block] = factor · left @ right`, `(pairs·heads, L, D)` products written in place."""
        target = destination[block]
        if target.shape[0] == 1:  # a view of the destination: written directly
            torch.bmm(left, right, out=target[0]).mul_(factor)
        else:
            target.copy_(torch.bmm(left, right).mul_(factor).view(target.shape))

    @staticmethod
    def _probabilities(query, key, attention_bias, scale, block, buffer):
        """`softmax(scale · Q Kᵀ + bias)` of one block, `(pairs·heads, Lq, Lk)`, computed in `buffer`."""
        query, key = _CPUDropoutAttention._rows(query, block), _CPUDropoutAttention._rows(key, block)
        scores = buffer[: query.shape[0] * query.shape[1] * key.shape[1]].view(query.shape[0], query.shape[1], -1)
        if attention_bias is None:
            torch.bmm(query, key.transpose(1, 2), out=scores).mul_(scale)
        else:
            bias = _CPUDropoutAttention._rows(attention_bias, block)
            torch.baddbmm(bias, query, key.transpose(1, 2), alpha=scale, out=scores)
        return torch.softmax(scores, dim=-1, out=scores)

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, query, key, value, attention_bias, dropout, scale=None):
        num_pairs, num_heads, query_length, _ = query.shape
        key_length = key.shape[2]
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        dtype = at_least_float32(query.dtype)  # float64 stays float64
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        if attention_bias is not None:
            attention_bias = attention_bias.to(dtype).expand(num_pairs, num_heads, query_length, key_length)
        # Written as (N, Lq, H, Dv) and returned as its (N, H, Lq, Dv) view: merging the heads is then free.
        output = value.new_empty(num_pairs, query_length, num_heads, value.shape[-1]).transpose(1, 2)
        map_elements = query_length * key_length
        packed_keep = torch.empty(num_pairs, num_heads, (map_elements + 7) // 8, dtype=torch.uint8, device="cpu")
        blocks = _CPUDropoutAttention._blocks(num_pairs, num_heads, map_elements)
        first_pairs, first_heads = blocks[0]
        block_elements = len(range(num_pairs)[first_pairs]) * len(range(num_heads)[first_heads]) * map_elements
        probs_buffer = value.new_empty(block_elements)
        keep_buffer = torch.empty(block_elements, dtype=torch.bool, device="cpu")
        masks, packed = _CPUKeepMasks(dropout), packed_keep.numpy()
        for block in blocks:
            probs = _CPUDropoutAttention._probabilities(query, key, attention_bias, scale, block, probs_buffer)
            keep = masks.fill_(keep_buffer[: probs.numel()]).view(probs.shape)
            packed[block] = np.packbits(keep.numpy().reshape(packed[block].shape[:2] + (-1,)), axis=-1)
            _CPUDropoutAttention._bmm_into(
                output, block, probs.mul_(keep), _CPUDropoutAttention._rows(value, block), 1.0 / (1.0 - dropout)
            )
        ctx.save_for_backward(query, key, value, output, packed_keep, attention_bias)
        ctx.dropout, ctx.scale, ctx.blocks = dropout, scale, blocks
        ctx.map_elements, ctx.block_elements = map_elements, block_elements
        return output

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_output):
        query, key, value, output, packed_keep, attention_bias = ctx.saved_tensors
        keep_scale, scale = 1.0 / (1.0 - ctx.dropout), ctx.scale
        grad_output = grad_output.to(query.dtype)
        grad_query, grad_key, grad_value = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        probs_buffer, grad_buffer = value.new_empty(ctx.block_elements), value.new_empty(ctx.block_elements)
        packed = packed_keep.numpy()
        rows, bmm_into = _CPUDropoutAttention._rows, _CPUDropoutAttention._bmm_into
        for block in ctx.blocks:
            probs = _CPUDropoutAttention._probabilities(query, key, attention_bias, scale, block, probs_buffer)
            unpacked = np.unpackbits(packed[block], axis=-1, count=ctx.map_elements)  # (p, h, Lq·Lk) 0/1 bytes
            block_keep = torch.from_numpy(unpacked).view(torch.bool).view(probs.shape)
            grad_out, block_value = rows(grad_output, block), rows(value, block)
            row_dot = (grad_out * rows(output, block)).sum(dim=-1, keepdim=True)  # rowsum(dP ⊙ P), (b, Lq, 1)
            # dS = P ⊙ (dP − row_dot), dP = (dout Vᵀ) ⊙ M / (1 − p).
            grad_scores = grad_buffer[: probs.numel()].view(probs.shape)
            torch.bmm(grad_out, block_value.transpose(1, 2), out=grad_scores)
            grad_scores.mul_(block_keep).mul_(keep_scale).sub_(row_dot).mul_(probs)
            kept_probs = probs.mul_(block_keep)
            bmm_into(grad_value, block, kept_probs.transpose(1, 2), grad_out, keep_scale)
            bmm_into(grad_query, block, grad_scores, rows(key, block), scale)
            bmm_into(grad_key, block, grad_scores.transpose(1, 2), rows(query, block), scale)
        return grad_query, grad_key, grad_value, None, None, None


class _CPUDropout(torch.autograd.Function):
    """`residual + dropout(hidden)` for CPU training, in one output tensor; the mask is kept as booleans.

    The same function as `F.dropout` then the addition, computed in cache-sized slices ([`_CPUKeepMasks`] draws
    the mask); PyTorch's CPU dropout draws with the slower `bernoulli_` and keeps a float mask, and the separate
    addition allocates a second activation-sized tensor.
    """

    @staticmethod
    def forward(ctx, hidden, residual, dropout):
        keep_scale = 1.0 / (1.0 - dropout)
        dtype = hidden.dtype if residual is None else torch.promote_types(hidden.dtype, residual.dtype)
        keep = torch.empty(hidden.shape, dtype=torch.bool, device="cpu")
        output = torch.empty(hidden.shape, dtype=dtype, device="cpu")
        flat_hidden, flat_keep, flat_output = hidden.reshape(-1), keep.view(-1), output.view(-1)
        flat_residual = None if residual is None else residual.expand(hidden.shape).reshape(-1)
        masks = _CPUKeepMasks(dropout)
        for start, end in _slices(flat_keep.numel()):
            part_keep = masks.fill_(flat_keep[start:end])
            part = torch.mul(flat_hidden[start:end], part_keep, out=flat_output[start:end]).mul_(keep_scale)
            if flat_residual is not None:
                part.add_(flat_residual[start:end])
        ctx.save_for_backward(keep)
        ctx.keep_scale, ctx.has_residual = keep_scale, residual is not None
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (keep,) = ctx.saved_tensors
        grad_hidden = torch.empty(keep.shape, dtype=grad_output.dtype, device="cpu")
        flat_grad, flat_keep, flat_hidden = grad_output.reshape(-1), keep.view(-1), grad_hidden.view(-1)
        for start, end in _slices(flat_keep.numel()):
            torch.mul(flat_grad[start:end], flat_keep[start:end], out=flat_hidden[start:end]).mul_(ctx.keep_scale)
        return grad_hidden, grad_output if ctx.has_residual else None, None


class RGNetDropout(nn.Dropout):
    """`nn.Dropout` with an optional residual: `forward(hidden, residual)` returns `residual + dropout(hidden)`.

    Training on CPU runs [`_CPUDropout`] (the same function, faster and smaller); otherwise, and in code
    `torch.compile` compiles, PyTorch's dropout. The choice does not depend on the grad mode, so that reentrant
    gradient checkpointing, whose first pass runs without gradients, recomputes with the masks it drew.
    """

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and self.p > 0 and hidden.device.type == "cpu" and not torch.compiler.is_compiling():
            return _CPUDropout.apply(hidden, residual, self.p)
        hidden = super().forward(hidden)
        return hidden if residual is None else residual + hidden


class _ReluDropout(torch.autograd.Function):
    """`dropout(relu(x))` keeping only its output for the backward (the input of `fc2`, which autograd keeps anyway).

    The gradient is `grad · 1[out > 0] / (1 − p)`: an output is positive exactly where the input was positive and the
    unit kept. Autograd's own `relu` then `dropout` would keep two more `(N, L, ffn_dim)` tensors per feed-forward
    block, the largest activations of the model.
    """

    @staticmethod
    def forward(ctx, hidden, dropout):
        output = hidden.relu_()  # `hidden` is the fresh 2-D output of `fc1`, not a view: no copy-back in backward
        ctx.mark_dirty(output)
        keep_scale = 1.0 / (1.0 - dropout)
        if dropout > 0 and output.device.type != "cpu":
            # A boolean mask, then the scale as a Python float: in-place `F.dropout` multiplies by a noise tensor of
            # the activation's dtype, whose 1/(1 − p) is rounded to bf16 under autocast (the backward's is exact).
            output.mul_(torch.empty_like(output, dtype=torch.bool).bernoulli_(1.0 - dropout)).mul_(keep_scale)
        elif dropout > 0:  # applied in place slice by slice, with a reused mask buffer
            flat, masks = output.view(-1), _CPUKeepMasks(dropout)
            keep = torch.empty(min(flat.numel(), _SLICE_ELEMENTS), dtype=torch.bool, device="cpu")
            for start, end in _slices(flat.numel()):
                flat[start:end].mul_(masks.fill_(keep[: end - start])).mul_(keep_scale)
        ctx.save_for_backward(output)
        ctx.keep_scale = keep_scale
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        grad_hidden = torch.ops.aten.threshold_backward(grad_output, output, 0)  # relu's own backward kernel
        return grad_hidden.mul_(ctx.keep_scale) if ctx.keep_scale != 1.0 else grad_hidden, None


class _CPUFeedForward(torch.autograd.Function):
    """`fc2(dropout(relu(fc1(x))))` for CPU training in float32, computed block of rows by block of rows.

    The forward writes each block's `(rows, ffn_dim)` activation once and uses it while it is in cache (ReLU,
    dropout, `fc2`); it is kept for the backward (as `fc2` needs it anyway). The backward runs block by block too,
    through one reused `(rows, ffn_dim)` buffer: autograd's version allocates two fresh `(N·L, ffn_dim)` gradients
    per layer (472 MB each for a MAD encoder layer), and on a CPU every fresh page costs a kernel page fault.
    Weight and bias gradients accumulate over the blocks. The dropout mask is drawn block after block from one
    [`_CPUKeepMasks`] (blocks hold a multiple of 4 elements, so it equals one draw over the whole activation).
    """

    # Activation elements per block (4 MB of float32), rounded to a multiple of 4 rows.
    _block_elements = _SLICE_ELEMENTS

    @staticmethod
    def _row_blocks(num_rows: int, ffn_dim: int) -> list[slice]:
        step = max(4, (_CPUFeedForward._block_elements // ffn_dim) // 4 * 4)
        return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]

    @staticmethod
    def forward(ctx, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, dropout):
        num_rows, ffn_dim = hidden.shape[0], fc1_weight.shape[0]
        hidden = hidden.contiguous()
        activation = hidden.new_empty(num_rows, ffn_dim)
        output = hidden.new_empty(num_rows, fc2_weight.shape[0])
        blocks = _CPUFeedForward._row_blocks(num_rows, ffn_dim)
        keep_scale = 1.0 / (1.0 - dropout)
        masks = _CPUKeepMasks(dropout) if dropout > 0 and blocks else None
        if masks is not None:  # one mask buffer for every block
            keep = torch.empty(blocks[0].stop * ffn_dim, dtype=torch.bool, device="cpu")
        for rows in blocks:
            block = torch.addmm(fc1_bias, hidden[rows], fc1_weight.t(), out=activation[rows]).relu_()
            if masks is not None:
                block.mul_(masks.fill_(keep[: block.numel()]).view(block.shape)).mul_(keep_scale)
            torch.addmm(fc2_bias, block, fc2_weight.t(), out=output[rows])
        ctx.save_for_backward(hidden, activation, fc1_weight, fc2_weight)
        ctx.keep_scale, ctx.blocks = keep_scale, blocks
        return output

    @staticmethod
    def backward(ctx, grad_output):
        hidden, activation, fc1_weight, fc2_weight = ctx.saved_tensors
        needs_hidden, needs_fc1_weight, needs_fc1_bias, needs_fc2_weight, needs_fc2_bias, _ = ctx.needs_input_grad
        grad_output = grad_output.contiguous()
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_fc1_weight = torch.zeros_like(fc1_weight) if needs_fc1_weight else None
        grad_fc1_bias = fc1_weight.new_zeros(fc1_weight.shape[0]) if needs_fc1_bias else None
        grad_fc2_weight = torch.zeros_like(fc2_weight) if needs_fc2_weight else None
        grad_fc2_bias = grad_output.sum(0) if needs_fc2_bias else None
        buffer = activation.new_empty(ctx.blocks[0].stop if ctx.blocks else 0, activation.shape[1])
        for rows in ctx.blocks:
            block_grad, block_activation = grad_output[rows], activation[rows]
            if grad_fc2_weight is not None:
                grad_fc2_weight.addmm_(block_grad.t(), block_activation)
            if not (needs_hidden or needs_fc1_weight or needs_fc1_bias):
                continue
            # Through fc2, then ReLU and dropout: an activation is positive exactly where its unit passed both.
            grad_activation = torch.mm(block_grad, fc2_weight, out=buffer[: block_activation.shape[0]])
            torch.ops.aten.threshold_backward.grad_input(
                grad_activation, block_activation, 0, grad_input=grad_activation
            )
            if ctx.keep_scale != 1.0:
                grad_activation.mul_(ctx.keep_scale)
            if grad_fc1_weight is not None:
                grad_fc1_weight.addmm_(grad_activation.t(), hidden[rows])
            if grad_fc1_bias is not None:
                grad_fc1_bias.add_(grad_activation.sum(0))
            if grad_hidden is not None:
                torch.mm(grad_activation, fc1_weight, out=grad_hidden[rows])
        return grad_hidden, grad_fc1_weight, grad_fc1_bias, grad_fc2_weight, grad_fc2_bias, None


# ---- Input projections (spec §5.1) ----


class RGNetProjectionBlock(nn.Module):
    """LayerNorm → Dropout → Linear, optionally followed by ReLU."""

    def __init__(self, in_features: int, out_features: int, dropout: float, eps: float, relu: bool):
        super().__init__()
        self.norm = nn.LayerNorm(in_features, eps=eps)
        self.dropout = RGNetDropout(dropout)
        self.dense = nn.Linear(in_features, out_features)
        self.relu = relu

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.dense(self.dropout(self.norm(features)))
        return F.relu(hidden) if self.relu else hidden


class RGNetInputProjection(nn.Module):
    """Two projection blocks `in → D → D`, ReLU after the first only (spec §5.1)."""

    def __init__(self, in_features: int, config: RGNetConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                RGNetProjectionBlock(
                    in_features, config.hidden_size, config.input_dropout, config.layer_norm_eps, True
                ),
                RGNetProjectionBlock(
                    config.hidden_size, config.hidden_size, config.input_dropout, config.layer_norm_eps, False
                ),
            ]
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            features = block(features)
        return features


# ---- Shared blocks ----


class RGNetXavierLinear(nn.Linear):
    """A linear layer of the encoders, selector or decoder: Xavier-uniform weight at init (spec §5.10).

    `zero_bias` marks attention projections and the last layer of each anchor-update head, whose bias starts at
    0; other biases keep PyTorch's default. Initialisation differs from `nn.Linear`, and float32 CPU inference runs
    oneDNN's fused linear ([`cpu_inference_linear`]).
    """

    def __init__(self, in_features: int, out_features: int, zero_bias: bool = False):
        super().__init__(in_features, out_features)
        self.zero_bias = zero_bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        fused = cpu_inference_linear(hidden, self.weight, self.bias)  # float32 CPU inference: oneDNN
        return super().forward(hidden) if fused is None else fused


class RGNetAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (the original packs them in one `in_proj`)."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.dropout
        self.q_proj = RGNetXavierLinear(hidden, hidden, zero_bias=True)
        self.k_proj = RGNetXavierLinear(hidden, hidden, zero_bias=True)
        self.v_proj = RGNetXavierLinear(hidden, hidden, zero_bias=True)
        self.out_proj = RGNetXavierLinear(hidden, hidden, zero_bias=True)

    def forward(self, query, key, value, attention_bias=None):
        """`attention_bias`: a tensor broadcastable to `(N, H, Lq, Lk)`, the retrieval encoder's factored
        [`RGNetSelectorMask`] (no gradient through the attention), or the text keys' [`RGNetKeyPaddingMask`]."""
        query, key, value = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if isinstance(attention_bias, RGNetSelectorMask) and self.training and self.dropout > 0:
            attention_bias = attention_bias.to(query.device).bias(query.dtype)  # dropout needs the plain kernel
        dropout = self.dropout if self.training else 0.0
        if isinstance(attention_bias, RGNetSelectorMask):
            attended = selector_attention(query, key, value, attention_bias, self.num_heads)
        elif isinstance(attention_bias, RGNetKeyPaddingMask):
            attended = key_padding_attention(query, key, value, attention_bias, self.num_heads, dropout)
        else:
            attended = multi_head_attention(query, key, value, attention_bias, self.num_heads, dropout)
        return self.out_proj(attended)


class RGNetFeedForward(nn.Module):
    """`fc2(dropout(relu(fc1(x))))`; the residual and normalisation belong to the caller."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.fc1 = RGNetXavierLinear(config.hidden_size, config.ffn_dim)
        self.fc2 = RGNetXavierLinear(config.ffn_dim, config.hidden_size)
        self.dropout = RGNetDropout(config.dropout)

    def _runs_cpu_training_kernel(self, hidden: torch.Tensor) -> bool:
        """[`_CPUFeedForward`] computes gradients on CPU in float32 (autocast off) with plain linear layers
        ([`computes_plain_linear`]: it reads their weights); elsewhere autograd does."""
        if (
            hidden.device.type != "cpu"
            or not torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling()
        ):
            return False
        if not (computes_plain_linear(self.fc1) and computes_plain_linear(self.fc2)):
            return False
        tensors = (hidden, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        return all(tensor.dtype == torch.float32 for tensor in tensors) and any(t.requires_grad for t in tensors)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        hidden = hidden.reshape(-1, shape[-1])  # (N·L, D)
        dropout = self.dropout.p if self.training else 0.0
        if self._runs_cpu_training_kernel(hidden):
            weights = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
            return _CPUFeedForward.apply(hidden, *weights, dropout).reshape(shape)
        if dropout > 0 or (
            torch.is_grad_enabled() and any(t.requires_grad for t in (hidden, self.fc1.weight, self.fc1.bias))
        ):
            if torch.compiler.is_compiling():  # the compiler fuses the ReLU and dropout and picks what to keep itself
                hidden = self.dropout(F.relu(self.fc1(hidden)))
            else:
                # Keeps only the activation fc2 needs anyway. Taken for any training pass with dropout, with gradients
                # or not, so that reentrant checkpointing's first pass and its recomputation draw their masks alike.
                hidden = _ReluDropout.apply(self.fc1(hidden), dropout)
        else:
            # Compiled too: the compiler writes the ReLU as its own pass over the (N·L, ffn_dim) activation (1.5 ms per
            # 1,296-pair MAD layer on an H200), where the BLAS epilogue applies it as the product is written.
            hidden = linear_relu(hidden, self.fc1)  # (N·L, ffn_dim)
        return self.fc2(hidden).reshape(shape)  # (..., D)


class RGNetMLP(nn.Module):
    """A stack of linear layers with ReLU between them (not after the last).

    `xavier` selects the decoder's initialisation (heads outside the decoder keep PyTorch's default);
    `zero_last_bias` starts the last bias at 0 (the anchor-update heads).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        *,
        xavier: bool,
        zero_last_bias: bool = False,
    ):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        layers = []
        for index in range(num_layers):
            if xavier:
                layers.append(
                    RGNetXavierLinear(dims[index], dims[index + 1], zero_last_bias and index == num_layers - 1)
                )
            else:
                layers.append(nn.Linear(dims[index], dims[index + 1]))
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden)
            if index < len(self.layers) - 1:
                hidden = F.relu(hidden)
        return hidden


# ---- Text-to-video encoder (spec §5.3) ----


class RGNetTextToVideoLayer(GradientCheckpointingLayer):
    """Frames attend to the query's tokens; only the frame rows change.

    Positions: the query (frames) carries the video sine encoding; text keys and values carry none.
    Normalisation placement is the original's and unusual: the attention residual is not normalised, the
    feed-forward block reads `attn_norm(H)` and adds to the unnormalised `H`, then `ffn_norm` closes the layer:
    `H = V + A`, `V' = ffn_norm(H + FFN(attn_norm(H)))`. Swapping the two norms breaks every output.
    """

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.attn = RGNetAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = RGNetFeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = RGNetDropout(config.dropout)

    def forward(self, video_hidden, text_hidden, video_position, attention_bias):
        attended = self.attn(video_hidden + video_position, text_hidden, text_hidden, attention_bias)
        hidden = self.dropout(attended, residual=video_hidden)
        return self.ffn_norm(self.dropout(self.ffn(self.attn_norm(hidden)), residual=hidden))


class RGNetTextToVideoEncoder(nn.Module):
    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.layers = nn.ModuleList(RGNetTextToVideoLayer(config) for _ in range(config.num_text_to_video_layers))

    def forward(self, video_hidden, text_hidden, video_position, attention_bias):
        for layer in self.layers:
            video_hidden = layer(video_hidden, text_hidden, video_position, attention_bias)
        return video_hidden


# ---- Frame selector (spec §5.4) ----


class RGNetFrameSelector(nn.Module):
    """Binary gate per token of `[global; frames]` from a relaxed Bernoulli sample with a straight-through gradient.

    Training: `soft = σ((z + η) / τ)` with logistic noise `η = log(u + 1e-8) − log(1 − u + 1e-8)`, `u ~ U(0, 1)`;
    the forward value is `hard = 1[soft ≥ 0.5]` and the gradient is that of `soft`. Eval: `hard = 1[z ≥ 0]`.
    """

    def __init__(self, config: RGNetConfig):
        super().__init__()
        # Read at each call: a temperature set on `model.config` after loading is the one used (and saved).
        self.config = config
        self.dense = RGNetXavierLinear(config.hidden_size, 1)

    def forward(self, sequence_hidden: torch.Tensor, uniform_noise: torch.Tensor | None = None):
        """
        Args:
            sequence_hidden (`torch.Tensor` of shape `(N, 1 + Lv, D)`).
            uniform_noise (`torch.Tensor` of shape `(N, 1 + Lv)`, *optional*): the samples `u` (drawn when `None`).

        Returns:
            `(hard, noisy_logits, logits)`, each of shape `(N, 1 + Lv)`; `noisy_logits` is `None` in eval mode.
        """
        logits = self.dense(sequence_hidden).squeeze(-1)
        if not self.training:
            return (logits >= 0).to(logits.dtype), None, logits
        # The noise and the gate in float32 at least: bfloat16 would round every u above 1 − 2⁻⁹ to 1 (noise 18.4
        # instead of 6–9) and move the 0.5 threshold of the sigmoid by its own rounding.
        noise_dtype = torch.promote_types(logits.dtype, torch.float32)
        if uniform_noise is None:
            uniform_noise = torch.rand(logits.shape, dtype=noise_dtype, device=logits.device)
        uniform_noise = uniform_noise.to(device=logits.device, dtype=noise_dtype)
        noisy_logits = logits.to(noise_dtype) + torch.log(uniform_noise + 1e-8) - torch.log(1 - uniform_noise + 1e-8)
        soft = torch.sigmoid(noisy_logits / self.config.selector_temperature)
        hard = (soft >= 0.5).to(soft.dtype)
        gate = hard - soft.detach() + soft
        return gate.to(logits.dtype), noisy_logits.to(logits.dtype), logits


# ---- Retrieval encoder (spec §5.5) ----


class RGNetRetrievalEncoderLayer(GradientCheckpointingLayer):
    """Post-norm self-attention over `[global; frames]`: `q = k = S + P`, `v = S`, with the selector bias."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.attn = RGNetAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = RGNetFeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = RGNetDropout(config.dropout)

    def forward(self, sequence_hidden, sequence_position, attention_bias, global_only=False):
        """
        Args:
            sequence_hidden (`torch.Tensor` of shape `(N, 1 + Lv, D)`), sequence_position (`(N, 1 + Lv, D)`),
            attention_bias (`torch.Tensor` of shape `(N, 1, 1 + Lv, 1 + Lv)`, or its factored
                [`RGNetSelectorMask`] where no gradient is needed).
            global_only (`bool`): update only the global token's row; keys and values still span every token.

        Returns:
            `torch.Tensor` of shape `(N, 1 + Lv, D)`, or `(N, 1, D)` with `global_only`.
        """
        query_key = sequence_hidden + sequence_position
        query_rows = slice(0, 1) if global_only else slice(None)
        if isinstance(attention_bias, RGNetSelectorMask):
            attention_bias = attention_bias.global_row() if global_only else attention_bias
        else:
            attention_bias = attention_bias[:, :, query_rows]
        attended = self.attn(query_key[:, query_rows], query_key, sequence_hidden, attention_bias)
        sequence_hidden = self.attn_norm(self.dropout(attended, residual=sequence_hidden[:, query_rows]))
        return self.ffn_norm(self.dropout(self.ffn(sequence_hidden), residual=sequence_hidden))


class RGNetRetrievalEncoder(nn.Module):
    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.layers = nn.ModuleList(RGNetRetrievalEncoderLayer(config) for _ in range(config.num_encoder_layers))

    def forward(
        self,
        sequence_hidden,
        sequence_position,
        attention_bias,
        grounding_pair_index=None,
        choose_grounding_pairs=None,
    ):
        """
        Args:
            sequence_hidden, sequence_position, attention_bias: see [`RGNetRetrievalEncoderLayer`].
            grounding_pair_index (`torch.LongTensor` of shape `(G,)`, *optional*): pairs whose frame states are
                needed; for the others the last layer computes only the global token's row. `None` = all pairs.
            choose_grounding_pairs (`Callable`, *optional*): instead of `grounding_pair_index`, a function of the
                global states `(N, D)` of every pair (from the last layer's global row alone) returning the pairs to
                ground; the returned global states are then those rows for every pair.

        Returns:
            `(sequence_hidden (G, 1 + Lv, D), global_hidden (N, D), grounding_pair_index (G,) or None)`, `G = N`
            when neither `grounding_pair_index` nor `choose_grounding_pairs` is given.
        """
        *first_layers, last_layer = self.layers
        for layer in first_layers:
            sequence_hidden = layer(sequence_hidden, sequence_position, attention_bias)
        if grounding_pair_index is None and choose_grounding_pairs is None:
            sequence_hidden = last_layer(sequence_hidden, sequence_position, attention_bias)
            return sequence_hidden, sequence_hidden[:, 0], None

        def last_layer_on(index):  # (G, 1 + Lv, D): the full last layer on the chosen pairs
            # The mask first: its padded pairs are read on the host (`nonzero`) before the gathers are queued.
            if isinstance(attention_bias, RGNetSelectorMask):
                pairs_bias = attention_bias.pairs(index)
            else:
                pairs_bias = attention_bias[index]
            return last_layer(sequence_hidden[index], sequence_position[index], pairs_bias)

        def global_rows():  # (N, D): the last layer's global row alone, for every pair (far cheaper than all rows)
            return last_layer(sequence_hidden, sequence_position, attention_bias, global_only=True)[:, 0]

        if choose_grounding_pairs is not None:  # chosen pairs keep the global rows they were chosen by
            global_hidden = global_rows()
            grounding_pair_index = choose_grounding_pairs(global_hidden)
            return last_layer_on(grounding_pair_index), global_hidden, grounding_pair_index
        # Given pairs take their global rows from the full layer, so each pair's global state and frames come from
        # one computation.
        grounded_hidden = last_layer_on(grounding_pair_index)
        global_hidden = global_rows().index_copy(0, grounding_pair_index, grounded_hidden[:, 0])
        return grounded_hidden, global_hidden, grounding_pair_index


# ---- Anchor decoder (spec §5.7) ----


class RGNetDecoderSelfAttention(nn.Module):
    """Self-attention among moment queries: `q = Lqc C + Lqp P`, `k = Lkc C + Lkp P`, `v = Lv C` (post-norm)."""

    def __init__(self, config: RGNetConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.dropout
        self.q_content = RGNetXavierLinear(hidden, hidden)
        self.q_pos = RGNetXavierLinear(hidden, hidden)
        self.k_content = RGNetXavierLinear(hidden, hidden)
        self.k_pos = RGNetXavierLinear(hidden, hidden)
        self.v = RGNetXavierLinear(hidden, hidden)
        self.out_proj = RGNetXavierLinear(hidden, hidden, zero_bias=True)
        self.dropout = RGNetDropout(config.dropout)
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def forward(self, content, query_position):
        query = self.q_content(content) + self.q_pos(query_position)
        key = self.k_content(content) + self.k_pos(query_position)
        attended = multi_head_attention(
            query, key, self.v(content), None, self.num_heads, self.attention_dropout if self.training else 0.0
        )
        return self.norm(self.dropout(self.out_proj(attended), residual=content))


class RGNetDecoderCrossAttention(nn.Module):
    """Conditional cross-attention to the frames, as in DAB-DETR, in 1-D.

    Per head, the query is `[content + position ; sine]` and the key `[content + position ; position]`, so q/k are
    twice as wide as v and the scale is `1/sqrt(2D/H)`. The query position term is added in every layer (the
    original's `keep_query_pos`, on in every recipe). Frame keys carry the video sine encoding; padding is masked.

    Inference (`memory_keys` given) runs the same function with the frame-side projections folded into the few
    moment queries, so that no layer projects the frames. With `W_k, W_p, W_v` the key-content, key-position and
    value weights of head `h`, `q_h, s_h` its query and sine parts, and `m_j, p_j` a frame's state and position:
    `logit = (W_kᵀ q_h)·m_j + (W_pᵀ (q_h + s_h))·p_j` + terms constant over frames (the key biases, which softmax
    ignores), and `out_h = W_v (Σ_j a_j m_j) + b_v` (the weights sum to 1). One attention over the keys
    `[m ; p]`, built once for all layers, with `Q·H` query rows replaces three `(G·Lv, D)` projections, an addition
    and two concatenations per layer. Training keeps the projected form, whose key biases get their (vanishing)
    gradients and whose dropout acts on the projected values; so do layers whose projections are not plain linear
    layers ([`computes_plain_linear`]: adapters, hooks).
    """

    def __init__(self, config: RGNetConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.dropout
        self.q_content = RGNetXavierLinear(hidden, hidden)
        self.q_pos = RGNetXavierLinear(hidden, hidden)
        self.k_content = RGNetXavierLinear(hidden, hidden)
        self.k_pos = RGNetXavierLinear(hidden, hidden)
        self.v = RGNetXavierLinear(hidden, hidden)
        self.q_sine = RGNetXavierLinear(hidden, hidden)
        self.out_proj = RGNetXavierLinear(hidden, hidden, zero_bias=True)
        self.dropout = RGNetDropout(config.dropout)
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def can_fold(self) -> bool:
        """Whether the folded form computes this layer: eval mode and plain frame-side projections."""
        return not self.training and all(
            computes_plain_linear(linear) for linear in (self.k_content, self.k_pos, self.v)
        )

    def forward(self, content, query_position, query_sine, memory, memory_position, memory_bias, memory_keys=None):
        """
        Args:
            content, query_position, query_sine (`torch.Tensor` of shape `(N, Q, D)`): moment queries.
            memory, memory_position (`torch.Tensor` of shape `(N, Lv, D)`), memory_bias (`(N, 1, 1, Lv)`): frames.
            memory_keys (`torch.Tensor` of shape `(N, Lv, 2D)`, *optional*): `[memory ; memory_position]` in
                `memory`'s dtype: selects the folded form where [`can_fold`] (the caller checks that no gradient is
                needed).
        """
        heads = self.num_heads
        query = rearrange(self.q_content(content) + self.q_pos(query_position), "n q (h d) -> n q h d", h=heads)
        sine = rearrange(self.q_sine(query_sine), "n q (h d) -> n q h d", h=heads)
        if memory_keys is not None and self.can_fold():
            attended = self._folded_attention(query, sine, memory, memory_keys, memory_bias)
            return self.norm(self.dropout(self.out_proj(attended), residual=content))
        key_position = self.k_pos(memory_position)
        key = rearrange(self.k_content(memory) + key_position, "n l (h d) -> n l h d", h=heads)
        key_position = rearrange(key_position, "n l (h d) -> n l h d", h=heads)
        query = torch.cat([query, sine], dim=-1).flatten(2)  # (N, Q, H·2D/H)
        key = torch.cat([key, key_position], dim=-1).flatten(2)  # (N, Lv, H·2D/H)
        attended = multi_head_attention(
            query, key, self.v(memory), memory_bias, heads, self.attention_dropout if self.training else 0.0
        )
        return self.norm(self.dropout(self.out_proj(attended), residual=content))

    def _folded_attention(self, query, sine, memory, memory_keys, memory_bias):
        """Attention of `query`, `sine` (`(N, Q, H, D/H)`) with the frame projections folded in; `(N, Q, D)`."""
        heads, head_width = query.shape[-2:]
        content_key = self.k_content.weight.unflatten(0, (heads, head_width))  # (H, D/H, D)
        position_key = self.k_pos.weight.unflatten(0, (heads, head_width))
        folded_query = torch.cat(
            [
                torch.einsum("nqhd,hdc->nqhc", query, content_key),
                torch.einsum("nqhd,hdc->nqhc", query + sine, position_key),
            ],
            dim=-1,
        )  # (N, Q, H, 2D): one query row per (moment query, head)
        mixed = multi_head_attention(
            folded_query.flatten(1, 2).to(memory.dtype),
            memory_keys,
            memory,
            memory_bias,
            num_heads=1,
            dropout=0.0,
            scale=(2 * head_width) ** -0.5,
        )  # (N, Q·H, D): Σ_j a_j m_j per head
        value_weight = self.v.weight.unflatten(0, (heads, head_width))  # (H, D/H, D)
        attended = torch.einsum("nqhc,hdc->nqhd", mixed.unflatten(1, (-1, heads)), value_weight)
        return attended.flatten(2) + self.v.bias


class RGNetDecoderFeedForward(nn.Module):
    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.ffn = RGNetFeedForward(config)
        self.dropout = RGNetDropout(config.dropout)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, content):
        return self.norm(self.dropout(self.ffn(content), residual=content))


class RGNetDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: RGNetConfig):
        super().__init__()
        self.self_attn = RGNetDecoderSelfAttention(config)
        self.cross_attn = RGNetDecoderCrossAttention(config)
        self.ffn = RGNetDecoderFeedForward(config)

    def forward(self, content, query_position, query_sine, memory, memory_position, memory_bias, memory_keys=None):
        content = self.self_attn(content, query_position)
        content = self.cross_attn(
            content, query_position, query_sine, memory, memory_position, memory_bias, memory_keys
        )
        return self.ffn(content)


class RGNetAnchorDecoder(nn.Module):
    """DAB-DETR-style decoder over 1-D `(center, width)` anchors (spec §5.7).

    Each layer: sine-embed the current anchors, derive the query position with `anchor_position_head`, scale the
    sine embedding by `query_scale(content)` (identity in layer 0) and by `σ(width_modulation_head(content)) / r_w`,
    run the layer, then move the anchors in logit space with the layer's own `anchor_update_heads[l]`. The span
    head keeps the gradient-carrying anchors; the decoder continues with detached ones. Differs from DAB-DETR:
    1-D anchors, one width scalar modulates the whole embedding, the query position enters cross-attention in
    every layer. The original also builds an update head for the last layer whose output it discards; it is
    not built here (the weight converter drops it).
    """

    def __init__(self, config: RGNetConfig):
        super().__init__()
        hidden = config.hidden_size
        self.hidden_size = hidden
        self.layers = nn.ModuleList(RGNetDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.query_scale = RGNetMLP(hidden, hidden, hidden, 2, xavier=True)
        self.anchor_position_head = RGNetMLP(hidden, hidden, hidden, 2, xavier=True)
        self.width_modulation_head = RGNetMLP(hidden, hidden, 1, 2, xavier=True)
        self.anchor_update_heads = nn.ModuleList(
            RGNetMLP(hidden, hidden, 2, 3, xavier=True, zero_last_bias=True)
            for _ in range(config.num_decoder_layers - 1)
        )
        self.layernorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def forward(self, anchors, memory, memory_position, memory_bias):
        """
        Args:
            anchors (`torch.Tensor` of shape `(N, Q, 2)`): initial anchors in sigmoid space.
            memory (`torch.Tensor` of shape `(N, Lv, D)`), memory_position (`(N, Lv, D)`),
            memory_bias (`torch.Tensor` of shape `(N, 1, 1, Lv)`): padding bias of the frames.

        Returns:
            `(decoder_hidden_states (L, N, Q, D), reference_anchors (L, N, Q, 2))`.
        """
        content = memory.new_zeros(anchors.shape[:2] + (self.hidden_size,))  # (N, Q, D)
        memory_keys, layer_memory = None, memory
        if not torch.is_grad_enabled() and any(layer.cross_attn.can_fold() for layer in self.layers):  # folded form
            if torch.is_autocast_enabled(memory.device.type):  # cast once here, not in each layer's attention
                layer_memory = memory.to(torch.get_autocast_dtype(memory.device.type))
            memory_keys = torch.cat([layer_memory, memory_position.to(layer_memory.dtype)], dim=-1)  # (N, Lv, 2D)
        reference_anchors = [anchors]
        hidden_states = []
        for index, layer in enumerate(self.layers):
            sine = anchor_sine_embedding(anchors, self.hidden_size).to(memory.dtype)  # (N, Q, D)
            query_position = self.anchor_position_head(sine)
            query_sine = sine if index == 0 else sine * self.query_scale(content)
            width_scale = self.width_modulation_head(content).sigmoid()[..., 0] / anchors[..., 1]  # (N, Q)
            query_sine = (query_sine * width_scale[..., None]).to(memory.dtype)
            content = layer(
                content, query_position, query_sine, layer_memory, memory_position, memory_bias, memory_keys
            )
            hidden_states.append(self.layernorm(content))
            if index < len(self.anchor_update_heads):
                offsets = run_head_in_float32(self.anchor_update_heads[index], content)
                updated = (offsets + inverse_sigmoid(anchors)).sigmoid()
                reference_anchors.append(updated)
                anchors = updated.detach()
        return torch.stack(hidden_states), torch.stack(reference_anchors)


# ---- Pretrained base ----


class RGNetPreTrainedModel(PreTrainedModel):
    """Weight initialisation (spec §5.10) and the Hugging Face plumbing shared by the RGNet models."""

    config_class = RGNetConfig
    config: RGNetConfig
    base_model_prefix = "model"
    main_input_name = "video_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RGNetTextToVideoLayer", "RGNetRetrievalEncoderLayer", "RGNetDecoderLayer"]
    # The loss is a mean over targets, not a per-token sum: Trainer must scale it for gradient accumulation.
    accepts_loss_kwargs = False
    # Every attention runs through `scaled_dot_product_attention` (no other implementation exists to choose).
    _supports_sdpa = True

    def __init__(self, config: RGNetConfig, *inputs, **kwargs):
        # A field set on the config after its construction is type-checked but not checked against the others (e.g.
        # `hidden_size` against `num_attention_heads`): checked here, before layers are built from it, instead of
        # failing inside one of them at the first forward.
        if isinstance(config, RGNetConfig):
            config.validate_fields()
        super().__init__(config, *inputs, **kwargs)

    def resize_token_embeddings(self, *args, **kwargs):
        base_model = getattr(self, self.base_model_prefix, self)
        if base_model.text_encoder is None:
            raise ValueError(
                "This RGNet model reads query features and has no token embeddings to resize: build it with a "
                "`text_config` (a text encoder) to use a tokenizer's vocabulary."
            )
        return super().resize_token_embeddings(*args, **kwargs)

    def enable_input_require_grads(self):
        """transformers' hook on `get_input_embeddings()`, plus the same hook on the outputs of the video and text
        input projections: they require gradients even when every weight before them is frozen.

        With `config.text_config`, `get_input_embeddings()` is the text encoder's token embeddings, and a frozen
        encoder runs without gradients: its output never requires them. With reentrant activation checkpointing
        (which gives gradients only to the layers whose inputs require them) an adapter inside RGNet's own layers
        would then get none. The video projection's output feeds every checkpointed layer; the text projection's
        is the text-to-video attention's keys. [`~PreTrainedModel.disable_input_require_grads`] removes all hooks.
        """
        super().enable_input_require_grads()
        base_model = getattr(self, self.base_model_prefix, self)
        hooks = list(getattr(self, "_require_grads_hooks", []))
        for projection in (base_model.video_projection, base_model.text_projection):
            if projection is not base_model.get_input_embeddings():  # not hooked by transformers already
                hooks.append(projection.register_forward_hook(_make_output_require_grad))
        self._require_grads_hooks = hooks
        self._require_grads_hook = hooks[0]  # transformers keeps the first one there (backward compatibility)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # `(model, loading_info)` on request
        # Loaded tensors can be slices of one memory-mapped buffer at unaligned addresses, and CPU matrix kernels
        # pick a different (equally valid) summation order for them. Copying those into aligned memory makes a
        # reloaded model reproduce the saved one bit for bit.
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64 != 0:
                    tensor.data = tensor.data.clone()
        # Loading makes new parameters, which require gradients again.
        getattr(model, model.base_model_prefix, model).freeze_text_encoder_as_configured()
        return loaded

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Spec §5.10, fully replacing the base N(0, 0.02) scheme, dispatched on leaf modules (remote-code loading
        # skips modules without parameters of their own; the optional text encoder runs its own scheme):
        # Xavier-uniform for every matrix of the encoders, the selector and the decoder (`RGNetXavierLinear`), zero
        # biases where marked; PyTorch's defaults for the input projections, heads and LayerNorms; N(0, 1) for the
        # global token, its position and the anchors.
        if isinstance(module, RGNetXavierLinear):
            init.xavier_uniform_(module.weight)
            if module.zero_bias:
                init.zeros_(module.bias)
            else:
                _default_linear_bias(module)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            _default_linear_bias(module)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RGNetModel):
            init.normal_(module.global_token)
            init.normal_(module.global_position)
            init.normal_(module.anchor_embeddings)


def _make_output_require_grad(module: nn.Module, inputs, output: torch.Tensor) -> None:
    """Forward hook of `enable_input_require_grads`: the module's output requires gradients."""
    output.requires_grad_(True)


def _default_linear_bias(linear: nn.Linear) -> None:
    """PyTorch's default `nn.Linear` bias: U(−1/sqrt(fan_in), 1/sqrt(fan_in))."""
    if linear.bias is not None:
        bound = 1 / math.sqrt(linear.in_features)
        init.uniform_(linear.bias, -bound, bound)


# ---- Model (spec §5.1-5.7) ----


class RGNetModel(RGNetPreTrainedModel):
    """RGNet without heads: projections, text-to-video encoder, frame selector, retrieval encoder, fusion and
    anchor decoder. Returns [`RGNetModelOutput`].

    With `config.text_config` set, an optional text encoder (`text_encoder`, e.g. CLIP's text transformer) turns
    `input_ids`/`attention_mask` into query token features: final-LayerNorm token states without the start and end
    tokens, L2-normalised as `x / (‖x‖ + 1e-5)`, truncated to `max_text_tokens` (spec §2). With
    `config.freeze_text_encoder` (the default) its weights need no gradient and it stays in eval mode in training.

    Every attention runs through `scaled_dot_product_attention` (`config._attn_implementation` is `"sdpa"`; an
    `"eager"` request computes the same through the same kernels, and the text encoder follows its own setting).
    """

    def __init__(self, config: RGNetConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.text_encoder = AutoModel.from_config(config.text_config) if config.text_config is not None else None
        self.text_projection = RGNetInputProjection(config.text_feature_dim, config)
        self.video_projection = RGNetInputProjection(config.video_feature_dim, config)
        self.global_token = nn.Parameter(torch.empty(hidden))
        self.global_position = nn.Parameter(torch.empty(hidden))
        self.text_to_video = RGNetTextToVideoEncoder(config)
        self.frame_selector = RGNetFrameSelector(config)
        self.encoder = RGNetRetrievalEncoder(config)
        self.decoder = RGNetAnchorDecoder(config)
        # Learned anchors before the sigmoid: (center, width) per moment query.
        self.anchor_embeddings = nn.Parameter(torch.empty(config.num_moment_queries, 2))
        # Without gradients and in eval mode, the retrieval encoder's attention over windows longer than the hidden
        # size runs from the factored selector mask ([`selector_attention`]) instead of the written-out bias: the
        # same function. False: always the bias (benchmarks).
        self.factored_selector_attention = True
        # In eval mode without gradients, on CUDA, the text-to-video attention runs over each pair's real text tokens
        # alone ([`key_padding_attention`]) where the flash kernel can: the same function. False: always the bias.
        self.packed_text_attention = True
        self.post_init()
        self.freeze_text_encoder_as_configured()

    def freeze_text_encoder_as_configured(self) -> None:
        """Take the text encoder's weights out of training where `config.freeze_text_encoder` says so (at
        construction and after `from_pretrained`)."""
        if self.text_encoder is not None and self.config.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.text_encoder is not None and self.config.freeze_text_encoder:
            self.text_encoder.eval()  # a fixed function, like the pre-extracted features it stands for: no dropout
        return self

    def get_input_embeddings(self) -> nn.Module:
        """The text encoder's token embeddings with `config.text_config`; otherwise the video input projection, the
        first layer the features meet (as vision models return their patch embeddings), on which
        `enable_input_require_grads` hooks."""
        if self.text_encoder is not None:
            return self.text_encoder.get_input_embeddings()
        return self.video_projection

    def set_input_embeddings(self, value: nn.Module) -> None:
        if self.text_encoder is None:
            raise ValueError(
                "This RGNet model reads query features and has no token embeddings to set: build it with a "
                "`text_config` (a text encoder) to use token embeddings."
            )
        self.text_encoder.set_input_embeddings(value)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Query token features from the configured text encoder (spec §2).

        Args:
            input_ids (`torch.LongTensor` of shape `(N, Lt + 2)`): tokenized queries with start and end tokens.
            attention_mask (`torch.Tensor` of shape `(N, Lt + 2)`, *optional*): 1 = real token.

        Returns:
            `(text_features (N, Lt', Dt), text_mask (N, Lt'))` with `Lt' = min(Lt, max_text_tokens)`.
        """
        if self.text_encoder is None:
            raise ValueError("`input_ids` needs a text encoder: set `text_config` in the RGNetConfig.")
        if (
            not isinstance(input_ids, torch.Tensor)
            or input_ids.is_floating_point()
            or input_ids.dtype == torch.bool
            or input_ids.dim() != 2
        ):
            got = (
                f"{input_ids.dtype} of shape {tuple(input_ids.shape)}"
                if isinstance(input_ids, torch.Tensor)
                else input_ids
            )
            raise ValueError(f"`input_ids` must be an integer tensor of shape (num_queries, num_tokens); got {got}.")
        if input_ids.shape[1] < 3:
            raise ValueError(f"`input_ids` must hold start, end and at least one token; got shape {input_ids.shape}.")
        vocab_size = self.get_input_embeddings().num_embeddings
        if bool(((input_ids < 0) | (input_ids >= vocab_size)).any()):
            raise ValueError(f"`input_ids` must be token ids in [0, {vocab_size}) (the text encoder's vocabulary).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
            got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else attention_mask
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids`, {tuple(input_ids.shape)}; got {got}."
            )
        elif bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
            # The start and end tokens are found by position (first, last real): padding must come after them.
            raise ValueError(
                "`attention_mask` must pad on the right (real tokens first): a tokenizer with `padding_side='left'` "
                "moves each query's start token; tokenize with `padding_side='right'`."
            )
        # Without a weight to train (frozen), the encoder's activations need not be kept for a backward pass.
        trains = torch.is_grad_enabled() and any(weight.requires_grad for weight in self.text_encoder.parameters())
        with torch.set_grad_enabled(trains):
            states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Drop the start token (position 0) and the end token (the last real position of each row).
        text_features = states[:, 1:-1]
        text_mask = attention_mask[:, 2:].to(states.dtype)
        text_features = text_features / (text_features.norm(dim=-1, keepdim=True) + 1e-5) * text_mask[..., None]
        limit = self.config.max_text_tokens
        return text_features[:, :limit], text_mask[:, :limit]

    # The checks read values (a host sync); under `torch.compile` they run eagerly at the start of the forward (a
    # graph break before any computation) and the forward after them compiles.
    @torch.compiler.disable
    def _check_inputs(
        self,
        video_features,
        video_mask,
        text_features,
        text_mask,
        selector_noise,
        grounding_pair_index,
        video_pair_index,
        text_pair_index=None,
        text_name="text_features",
    ):
        """`text_name`: the argument the text came from (`input_ids`, encoded into `text_features`), for messages."""
        config = self.config
        _check_video_features(video_features, config)
        if not isinstance(text_features, torch.Tensor) or not text_features.is_floating_point():
            got = text_features.dtype if isinstance(text_features, torch.Tensor) else type(text_features).__name__
            raise TypeError(f"`text_features` must be a floating-point torch.Tensor; got {got}.")
        for name, value in (("video_mask", video_mask), ("text_mask", text_mask)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"`{name}` must be a torch.Tensor of 1 (real) and 0 (padding); got {type(value).__name__}."
                )
        if video_mask is None or tuple(video_mask.shape) != tuple(video_features.shape[:2]):
            got = None if video_mask is None else tuple(video_mask.shape)
            raise ValueError(f"`video_mask` must have shape {tuple(video_features.shape[:2])}; got {got}.")
        if text_features.dim() != 3 or text_features.shape[-1] != config.text_feature_dim:
            raise ValueError(
                f"`text_features` must have shape (num_pairs, num_tokens, {config.text_feature_dim}) "
                f"(config.text_feature_dim); got {tuple(text_features.shape)}."
            )
        num_pairs = video_features.shape[0]
        # Index values out of range are flagged on the device and read with the other value checks below:
        # (flag, the error to raise when it is set).
        index_checks = []
        if video_pair_index is not None:
            index_checks.append(
                _check_row_index(
                    "video_pair_index", video_pair_index, video_features.shape[0], "`video_features` windows"
                )
            )
            num_pairs = video_pair_index.shape[0]
        source = "`video_pair_index`" if video_pair_index is not None else "`video_features`"
        if text_pair_index is not None:
            index_checks.append(
                _check_row_index(
                    "text_pair_index", text_pair_index, text_features.shape[0], "queries of the text", num_pairs
                )
            )
        elif text_features.shape[0] != num_pairs:
            raise ValueError(
                f"`{text_name}` has {text_features.shape[0]} pairs but {source} has {num_pairs} (pass "
                "`text_pair_index` when the text holds each query once)."
            )
        if text_mask is None or tuple(text_mask.shape) != tuple(text_features.shape[:2]):
            got = None if text_mask is None else tuple(text_mask.shape)
            raise ValueError(f"`text_mask` must have shape {tuple(text_features.shape[:2])}; got {got}.")
        if video_features.shape[1] > config.max_window_frames:
            raise ValueError(
                f"`video_features` windows hold {video_features.shape[1]} frames, more than "
                f"config.max_window_frames = {config.max_window_frames}."
            )
        if selector_noise is not None:
            expected = (num_pairs, video_features.shape[1] + 1)
            if not isinstance(selector_noise, torch.Tensor) or tuple(selector_noise.shape) != expected:
                got = tuple(selector_noise.shape) if isinstance(selector_noise, torch.Tensor) else selector_noise
                raise ValueError(f"`selector_noise` must be a tensor of shape {expected}; got {got}.")
        # The noise is read in training only (eval mode ignores it).
        check_noise = selector_noise is not None and self.training
        if grounding_pair_index is not None:
            index_checks.append(_grounding_pair_index_check(grounding_pair_index, num_pairs))
        # The value checks read their flags from the device at once: each read waits for the device.
        flags = [
            _has_values_other_than_0_and_1(video_mask),
            _has_values_other_than_0_and_1(text_mask),
            (video_mask.sum(dim=1) == 0).any(),
            (text_mask.sum(dim=1) == 0).any(),
            _has_non_finite(video_features),
            _has_non_finite(text_features),
            ~((selector_noise >= 0) & (selector_noise <= 1)).all()
            if check_noise
            else torch.zeros((), dtype=torch.bool, device=video_mask.device),
            # Padding columns beyond the limit are harmless; real tokens beyond it are not what the model learnt from.
            (text_mask.sum(dim=1) > config.max_text_tokens).any()
            if text_mask.shape[1] > config.max_text_tokens
            else torch.zeros((), dtype=torch.bool, device=video_mask.device),
            *(flag for flag, _ in index_checks),
        ]
        flags = torch.stack([flag.to(video_mask.device) for flag in flags]).tolist()
        bad_video_mask, bad_text_mask, empty_window, empty_query, bad_video, bad_text, bad_noise, long_text = flags[:8]
        for (_, error), bad in zip(index_checks, flags[8:], strict=True):
            if bad:
                raise error()
        # Positions are encoded from the mask's running sum and attention reads it as booleans: only 0 and 1 mean the
        # same to both.
        if bad_video_mask:
            raise ValueError("`video_mask` must hold only 1 (real) and 0 (padding).")
        if bad_text_mask:
            raise ValueError("`text_mask` must hold only 1 (real) and 0 (padding).")
        if empty_window:
            empty_windows = (video_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
            raise ValueError(f"`video_mask` marks no valid frame in pair(s) {empty_windows}.")
        if empty_query:
            empty_queries = (text_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
            what = "query (rows of the text)" if text_pair_index is not None else "pair(s)"
            raise ValueError(f"`text_mask` marks no valid token in {what} {empty_queries}.")
        if bad_video:
            raise ValueError("`video_features` contains NaN or infinite values.")
        if bad_text:
            raise ValueError("`text_features` contains NaN or infinite values.")
        if bad_noise:
            raise ValueError("`selector_noise` must hold uniform samples in [0, 1] (its logit is the gate's noise).")
        if long_text and not bad_text_mask:
            raise ValueError(
                f"`text_mask` marks more than config.max_text_tokens = {config.max_text_tokens} real tokens in a query "
                "(the processor keeps each query's first `max_text_tokens`)."
            )

    def _project_per_pair(self, projection: nn.Module, features: torch.Tensor, pair_index: torch.Tensor | None):
        """`projection` of each pair's rows of `features`, which hold distinct windows or queries when `pair_index`
        is given: projected once each, unless training with input dropout, where each pair draws its own."""
        if pair_index is None:
            return projection(features)
        if self.training and self.config.input_dropout > 0:
            return projection(features[pair_index])
        return projection(features)[pair_index]

    @can_return_tuple
    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_features: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        selector_noise: torch.Tensor | None = None,
        grounding_pair_index: torch.Tensor | None = None,
        video_pair_index: torch.Tensor | None = None,
        text_pair_index: torch.Tensor | None = None,
        choose_grounding_pairs: Callable[[torch.Tensor], torch.Tensor] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> RGNetModelOutput:
        r"""
        Args:
            video_features (`torch.FloatTensor` of shape `(N, Lv, Dv)`, or `(W, Lv, Dv)` with `video_pair_index`):
                Frame features of each pair's window, zero-padded at the end (`Lv ≤ max_window_frames`).
            video_mask (`torch.Tensor` of shape `(N, Lv)`, or `(W, Lv)` with `video_pair_index`):
                1 = real frame, 0 = padding. Every window needs at least one real frame.
            text_features (`torch.FloatTensor` of shape `(N, Lt, Dt)`, or `(Nq, Lt, Dt)` with `text_pair_index`,
                *optional*):
                L2-normalised query token features. Give these or `input_ids`.
            text_mask (`torch.Tensor` of shape `(N, Lt)`, or `(Nq, Lt)` with `text_pair_index`, *optional*):
                1 = real token; required with `text_features`.
            input_ids (`torch.LongTensor` of shape `(N, Lt + 2)`, or `(Nq, Lt + 2)` with `text_pair_index`,
                *optional*):
                Tokenized queries for the configured text encoder (`config.text_config`).
            attention_mask (`torch.Tensor` of shape like `input_ids`, *optional*):
                Mask of `input_ids`.
            selector_noise (`torch.FloatTensor` of shape `(N, 1 + Lv)`, *optional*):
                Uniform samples `u ∈ (0, 1)` for the frame selector's noise in training mode (drawn when `None`);
                lets a training step be reproduced exactly. Ignored in eval mode.
            grounding_pair_index (`torch.LongTensor` of shape `(G,)`, *optional*):
                Distinct pairs that need frame states and decoder outputs; the other pairs get only the global token
                (their last retrieval-encoder layer computes the global row alone and they skip fusion and decoder).
                Training with `"cross_pairs"` batches needs them only for the positives, `torch.arange(B) * (B + 1)`:
                the other `B² − B` pairs only feed the retrieval loss. `None` (default) = every pair.
            video_pair_index (`torch.LongTensor` of shape `(N,)`, *optional*):
                Window of each pair when `video_features` holds each of `W` distinct windows once (many queries on one
                video; `"cross_pairs"` batches, whose pair `i·B + j` uses window `j`). Outside training with input
                dropout, each window is then projected once. `None` (default): `video_features` is per pair.
            text_pair_index (`torch.LongTensor` of shape `(N,)`, *optional*):
                Query of each pair when `text_features`/`text_mask` (or `input_ids`/`attention_mask`) hold each of
                `Nq` distinct queries once (all windows of a video for a few queries; `"cross_pairs"` batches, whose
                pair `i·B + j` uses query `i`). The text encoder then runs once per query, and outside training with
                input dropout so does the text projection. `None` (default): the text is per pair.
            choose_grounding_pairs (`Callable`, *optional*):
                Chooses the grounded pairs from the pairs' global states instead of `grounding_pair_index`: called
                with the global token state `(N, D)` of every pair after the retrieval encoder (its last layer run on
                the global row alone), it returns the `grounding_pair_index`; those global states are the ones
                returned. [`RGNetForVideoGrounding`] uses it to ground only each query's best windows
                (`top_k_windows`).
            output_attentions, output_hidden_states (`bool`, *optional*):
                Accepted for the transformers interface; `True` (or `True` in the config) raises a `ValueError`:
                attention maps are never kept (fused attention), and the per-layer states returned are
                `decoder_hidden_states`.
            return_dict (`bool`, *optional*):
                `False` returns `to_tuple()` of the output (its non-`None` fields in order); defaults to
                `config.return_dict`.
        """
        config = self.config
        _check_output_flags(config, output_attentions, output_hidden_states)
        if grounding_pair_index is not None and choose_grounding_pairs is not None:
            raise ValueError("Pass either `grounding_pair_index` or `choose_grounding_pairs`, not both.")
        if input_ids is not None:
            if text_features is not None:
                raise ValueError("Pass either `text_features` or `input_ids`, not both.")
            if text_mask is not None:  # it would be replaced by the mask made from `attention_mask`, unread
                raise ValueError(
                    "`text_mask` goes with `text_features`; with `input_ids` pass the token mask as `attention_mask`."
                )
            text_features, text_mask = self.encode_text(input_ids, attention_mask)
        elif text_features is None:
            raise ValueError("One of `text_features` (with `text_mask`) or `input_ids` is required.")
        elif attention_mask is not None:  # it would be ignored: the mask of `text_features` is `text_mask`
            raise ValueError(
                "`attention_mask` goes with `input_ids`; with `text_features` pass the token mask as `text_mask`."
            )
        self._check_inputs(
            video_features,
            video_mask,
            text_features,
            text_mask,
            selector_noise,
            grounding_pair_index,
            video_pair_index,
            text_pair_index,
            text_name="input_ids" if input_ids is not None else "text_features",
        )
        if grounding_pair_index is not None:  # `index_copy` needs it beside the states; indexing would not
            grounding_pair_index = grounding_pair_index.to(video_features.device)
        # Features in the weights' dtype: float32 features run through a model loaded with `dtype=torch.bfloat16`.
        video_features = video_features.to(self.video_projection.blocks[0].norm.weight.dtype)
        text_features = text_features.to(self.text_projection.blocks[0].norm.weight.dtype)
        video_mask = video_mask.to(video_features.dtype)
        text_mask = text_mask.to(video_features.dtype)
        compute_dtype = _compute_dtype(video_features)
        num_pairs = video_features.shape[0] if video_pair_index is None else video_pair_index.shape[0]
        pair_text_mask = text_mask if text_pair_index is None else text_mask[text_pair_index]  # (N, Lt)

        # What the inference fast paths read on the host is read now, while the device has nothing queued: read
        # mid-forward, each read would leave the device idle until the host had queued the next layers. The
        # text-to-video attention's packed keys (eval mode only, so that a reentrant checkpoint's recompute runs the
        # same kernel as its first, gradient-free pass) and the retrieval encoder's pairs with padded keys (its
        # factored selector attention pays for windows longer than the hidden size: MAD's 901 tokens, not Ego4D's 91).
        text_bias = None
        if not config.emulate_text_mask_head_ordering:
            packed = self.packed_text_attention and not self.text_to_video.training
            text_bias = RGNetKeyPaddingMask(pair_text_mask, packed=packed)
        factored = 1 + video_features.shape[1] > config.hidden_size and self.factored_selector_attention
        factored = factored and not torch.is_grad_enabled() and not self.encoder.training
        packs_text = text_bias is not None and text_bias.may_pack(compute_dtype)
        padded_pairs = None
        if factored or packs_text:  # (training reads nothing: no eager step, no graph break)
            padded_pairs = _read_host_layout(text_bias if packs_text else None, video_mask, video_pair_index, factored)
        if choose_grounding_pairs is not None:
            choose_grounding_pairs = partial(_checked_choice, choose_grounding_pairs, num_pairs=num_pairs)

        # Input projections and position encodings (§5.1, §5.2).
        video_hidden = self._project_per_pair(self.video_projection, video_features, video_pair_index)  # (N, Lv, D)
        frame_position = video_sine_position_encoding(
            video_mask, config.hidden_size, config.video_position_temperature
        ).to(video_hidden.dtype)  # (N, Lv, D), or (W, Lv, D): once per window, like the projection
        # Positions of the sequence [global; frames] (§5.3-5.5), `[u; PE]`, built per window before they are given to
        # the pairs; the frames' positions are a view of them (one gather, no concatenation over the pairs).
        global_position = self.global_position.to(frame_position.dtype).expand(frame_position.shape[0], 1, -1)
        sequence_position = torch.cat([global_position, frame_position], dim=1)  # (N or W, 1 + Lv, D)
        if video_pair_index is not None:
            video_mask, sequence_position = video_mask[video_pair_index], sequence_position[video_pair_index]
        video_position = sequence_position[:, 1:]  # (N, Lv, D)
        text_hidden = self._project_per_pair(self.text_projection, text_features, text_pair_index)  # (N, Lt, D)
        text_mask = pair_text_mask
        if text_pair_index is not None:
            text_features = text_features[text_pair_index]  # per pair, as returned

        # Text-to-video encoder (§5.3): frames attend to the query's own tokens.
        if config.emulate_text_mask_head_ordering:
            text_bias = emulated_text_mask_head_ordering_bias(
                video_mask, text_mask, config.num_attention_heads, compute_dtype
            )
        video_hidden = self.text_to_video(video_hidden, text_hidden, video_position, text_bias)

        # Sequence [global; frames] (§5.3-5.5), with the positions `sequence_position` built above.
        global_token = self.global_token.to(video_hidden.dtype).expand(num_pairs, 1, -1)
        sequence_hidden = torch.cat([global_token, video_hidden], dim=1)  # (N, 1 + Lv, D)
        sequence_mask = torch.cat([video_mask.new_ones(num_pairs, 1), video_mask], dim=1)  # (N, 1 + Lv)

        # Frame selector (§5.4) and the retrieval encoder under its bias (§5.5).
        gate, noisy_logits, selector_raw_logits = self.frame_selector(sequence_hidden, selector_noise)
        # The factored form replaces an (S, S) bias per pair by passes over (S, D) activations (`factored` above).
        if factored:
            selector_mask = RGNetSelectorMask(
                gate, sequence_mask, config.selector_attention_mode, padded_pairs=padded_pairs
            )
        else:  # gradients flow through the attention, or short windows: the bias written out
            selector_mask = build_selector_attention_bias(
                gate, sequence_mask, config.selector_attention_mode, compute_dtype
            )
        sequence_hidden, global_hidden, grounding_pair_index = self.encoder(
            sequence_hidden, sequence_position, selector_mask, grounding_pair_index, choose_grounding_pairs
        )  # (G, 1 + Lv, D), (N, D), (G,) or None
        frame_gate = gate[:, 1:]  # (N, Lv)

        # Fusion of the global context into the selected frames (§5.6); the selector's only gradient path.
        grounded_gate, grounded_global = frame_gate, global_hidden
        if grounding_pair_index is not None:
            grounded_gate, grounded_global = frame_gate[grounding_pair_index], global_hidden[grounding_pair_index]
            video_position, video_mask = video_position[grounding_pair_index], video_mask[grounding_pair_index]
        frame_hidden = (
            sequence_hidden[:, 1:] + grounded_gate[..., None].to(sequence_hidden.dtype) * grounded_global[:, None]
        )  # (G, Lv, D)

        # Anchor decoder over the fused frames (§5.7); the gate is not a mask here.
        # Anchors are computed in float32 (or float64 for a float64 model) whatever the weights' dtype: bfloat16
        # centres would be off by frames.
        anchor_embeddings = self.anchor_embeddings.to(at_least_float32(self.anchor_embeddings.dtype))
        anchors = anchor_embeddings.sigmoid().expand(frame_hidden.shape[0], -1, -1)  # (G, Q, 2)
        decoder_hidden_states, reference_anchors = self.decoder(
            anchors, frame_hidden, video_position, padding_bias(video_mask, compute_dtype)
        )
        return RGNetModelOutput(
            decoder_hidden_states=decoder_hidden_states,
            reference_anchors=reference_anchors,
            encoder_last_hidden_state=frame_hidden,
            global_hidden_state=global_hidden,
            frame_selection=frame_gate,
            selector_logits=noisy_logits[:, 1:] if noisy_logits is not None else frame_gate,
            selector_raw_logits=selector_raw_logits,
            text_features=text_features,
            text_mask=text_mask,
            grounding_pair_index=grounding_pair_index,
        )


def _check_video_features(video_features, config: RGNetConfig):
    """`video_features` must be a floating-point `(pairs or windows, frames, config.video_feature_dim)` tensor."""
    if not isinstance(video_features, torch.Tensor) or not video_features.is_floating_point():
        got = video_features.dtype if isinstance(video_features, torch.Tensor) else type(video_features).__name__
        raise TypeError(f"`video_features` must be a floating-point torch.Tensor; got {got}.")
    if video_features.dim() != 3 or video_features.shape[-1] != config.video_feature_dim:
        raise ValueError(
            f"`video_features` must have shape (num_pairs, num_frames, {config.video_feature_dim}) "
            f"(config.video_feature_dim); got {tuple(video_features.shape)}."
        )


def _check_output_flags(config: RGNetConfig, output_attentions: bool | None, output_hidden_states: bool | None):
    """RGNet returns neither attention maps nor per-layer encoder states: say so instead of silently ignoring the
    request (given to `forward` or set on the config)."""
    if output_attentions if output_attentions is not None else config.output_attentions:
        raise ValueError(
            "`output_attentions` is not supported: RGNet computes attention with fused kernels "
            "(`scaled_dot_product_attention`) and keeps no attention maps."
        )
    if output_hidden_states if output_hidden_states is not None else config.output_hidden_states:
        raise ValueError(
            "`output_hidden_states` is not supported: RGNet keeps no per-layer encoder states. Its outputs already "
            "hold `decoder_hidden_states` (every decoder layer), `encoder_last_hidden_state` and "
            "`global_hidden_state`."
        )


def _check_row_index(name: str, index, num_rows: int, rows: str, num_pairs: int | None = None):
    """`index` maps each pair to one of `num_rows` shared rows (`rows`, e.g. windows): a 1-D int64 tensor of values
    in `[0, num_rows)`, with `num_pairs` entries when given. Checks the type and shape, and returns the value check
    unread: `(out_of_range, error)`, a boolean tensor on the index's device and the `ValueError` to raise when it is
    set (reading it waits for the device, so the caller reads it with its other flags)."""

    def error() -> ValueError:
        length = "" if num_pairs is None else f" of {num_pairs} pairs"
        return ValueError(
            f"`{name}` must be a 1-D int64 tensor{length} of indices in [0, {num_rows}) ({num_rows} {rows}); "
            f"got {index!r}."
        )

    if (
        not isinstance(index, torch.Tensor)
        or index.dtype != torch.int64
        or index.ndim != 1
        or (num_pairs is not None and index.shape[0] != num_pairs)
    ):
        raise error()
    return ((index < 0) | (index >= num_rows)).any(), error


def _grounding_pair_index_check(index, num_pairs: int):
    """`grounding_pair_index` must hold distinct pair indices in `[0, num_pairs)`: checks the type and shape, and
    returns the value check unread, as [`_check_row_index`] does (duplicates found by sorting: no device read)."""

    def error() -> ValueError:
        return ValueError(
            f"`grounding_pair_index` must be a 1-D int64 tensor of distinct pair indices in [0, {num_pairs}); "
            f"got {index!r}."
        )

    if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.ndim != 1 or index.numel() == 0:
        raise error()
    ordered = index.sort().values
    bad = (ordered[0] < 0) | (ordered[-1] >= num_pairs) | (ordered[1:] == ordered[:-1]).any()
    return bad, error


@torch.compiler.disable  # reads values: eager under `torch.compile`
def _check_grounding_pair_index(index, num_pairs: int) -> None:
    bad, error = _grounding_pair_index_check(index, num_pairs)
    if bad:
        raise error()


@torch.compiler.disable  # reads values on the host: eager under `torch.compile` (one graph break for both reads)
def _read_host_layout(text_bias, video_mask, video_pair_index, factored: bool) -> torch.Tensor | None:
    """Reads what the inference fast paths need on the host: the packed keys of `text_bias` when given (kept in the
    mask), and returns the pairs with padded keys where the selector attention is `factored` (else `None`)."""
    if text_bias is not None:
        text_bias.packed_keys()
    return pairs_with_padded_frames(video_mask, video_pair_index) if factored else None


def _checked_choice(choose_grounding_pairs, global_hidden: torch.Tensor, *, num_pairs: int) -> torch.Tensor:
    """`choose_grounding_pairs(global_hidden)`, checked as it is made: right after the choice has read the device,
    before the grounding layers are queued (a check after them would wait for them)."""
    index = choose_grounding_pairs(global_hidden)
    _check_grounding_pair_index(index, num_pairs)
    return index


def _rows_differ(rows: torch.Tensor | None) -> bool:
    """Whether the rows (dim 0) of `rows` are not all the same (a tensor of any rank; `False` for `None`). NaN counts
    as equal to anything: the input checks report it, not this."""
    if not isinstance(rows, torch.Tensor) or rows.shape[0] < 2:
        return False
    first = rows[:1]
    return bool(((rows != first) & (rows == rows) & (first == first)).any())


def _has_non_finite(tensor: torch.Tensor) -> torch.Tensor:
    """Whether some value is NaN or infinite, as a boolean tensor on the device, in one reading pass (NaN and ±inf
    reach the extremes; no mask of the input's size is built, unlike `isfinite(x).all()`)."""
    if tensor.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=tensor.device)
    return ~torch.isfinite(torch.stack(torch.aminmax(tensor))).all()


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite (reads the answer on the host)."""
    return not bool(_has_non_finite(tensor))


def _has_values_other_than_0_and_1(mask: torch.Tensor) -> torch.Tensor:
    """Whether a mask holds a value other than 0 and 1 (NaN included), as a boolean tensor on the device."""
    if mask.dtype == torch.bool:
        return torch.zeros((), dtype=torch.bool, device=mask.device)
    return ~((mask == 0) | (mask == 1)).all()


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype attention runs in: the autocast dtype when autocast is on for the tensor's device."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


# ---- Heads and loss (spec §5.8, §6) ----


# Window scores within this distance of a query's k-th best are grounded too: post-processing ranks windows by
# float32 `σ(ρ)` on the CPU (spec §7.5), which may differ from the float64 score here by a few float32 ulps (< 1e-6),
# so every window it keeps is among the grounded ones, ties at the cut included.
TOP_WINDOW_SCORE_TOLERANCE = 1e-6


@torch.compiler.disable  # its output's size depends on the scores: eager under `torch.compile` (a graph break)
def select_top_windows(window_logits: torch.Tensor, pair_query_index: torch.Tensor, top_k: int) -> torch.Tensor:
    """Pairs holding each query's `top_k` best windows by score `σ(ρ)`, plus windows within 1e-6 of its k-th score.

    The windows that inference post-processing pools (spec §7 step 3) are always among them, whatever the device
    and batching, so grounding only these pairs changes no prediction. Vectorised over queries (three sorts).

    Args:
        window_logits (`torch.Tensor` of shape `(N, 1)` or `(N,)`): Retrieval logits `ρ` of the pairs.
        pair_query_index (`torch.LongTensor` of shape `(N,)`): Query of each pair (any integer labels).
        top_k (`int`): Windows kept per query.

    Returns:
        `torch.LongTensor` of shape `(G,)`: the chosen pairs, ascending.
    """
    logits = window_logits.detach().reshape(-1)
    if logits.device.type == "mps":  # no float64 there
        logits = logits.cpu()
    scores = logits.double().sigmoid()  # (N,)
    # Each pair's query located in the sorted labels (its first position and pair count): sizes known without
    # reading the device, so the only read is the final `nonzero`.
    labels = pair_query_index.to(scores.device)
    sorted_labels = torch.sort(labels).values
    first = torch.searchsorted(sorted_labels, labels)  # (N,)
    count = torch.searchsorted(sorted_labels, labels, right=True) - first
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]  # grouped by query in label order, best first
    kth_score = scores[order[first + count.clamp(max=top_k) - 1]]  # (N,): the k-th best score of the pair's query
    chosen = (scores >= kth_score - TOP_WINDOW_SCORE_TOLERANCE).nonzero().flatten()
    return chosen.to(window_logits.device)


class RGNetForVideoGrounding(RGNetPreTrainedModel):
    """RGNet with its heads: moment class and span per decoder layer, window relevance and frame saliency.

    Given `labels` ([`RGNetLabels`]: the batch mode, target spans and saliency frames), it also returns the
    training loss of spec §6.4 computed by [`RGNetLoss`]. Batches follow the batch mode's pair layout:
    `"cross_pairs"` has `N = B²` pairs, pair `i·B + j` = (query `i`, positive window of query `j`);
    `"paired_negative"` has `N = 2B`, query `b`'s positive window at row `b` and its negative window at `B + b`.
    """

    def __init__(self, config: RGNetConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.model = RGNetModel(config)
        self.class_head = nn.Linear(hidden, 2)
        self.span_head = RGNetMLP(hidden, hidden, 2, 3, xavier=False)
        self.retrieval_head = nn.Linear(hidden, 1)
        self.saliency_frame_proj = nn.Linear(hidden, hidden)
        self.saliency_global_proj = nn.Linear(hidden, hidden)
        # The loss is a plain object without parameters or buffers (the state dict is exactly the architecture),
        # built from the config's loss fields when first used and again whenever they change (see `criterion`).
        self._criterion = None
        self._criterion_settings = None
        self.post_init()

    @property
    def criterion(self) -> RGNetLoss:
        """The [`RGNetLoss`] of the current `config`: a loss or matching field set on `model.config` after the model
        is built (e.g. `retrieval_loss_weight = 0` to finetune a pretrained model) is the one trained with, as the
        saved config will say."""
        settings = {name: getattr(self.config, name) for name in RGNetLoss.config_fields}
        if settings != self._criterion_settings:
            # Fields set after construction are only type-checked as they are set: a NaN weight or a zero temperature
            # would make the loss NaN or infinite without an error. Checked as at construction.
            self.config.validate_fields()
            self._criterion, self._criterion_settings = RGNetLoss(self.config), settings
        return self._criterion

    @can_return_tuple
    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_features: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: RGNetLabels | None = None,
        selector_noise: torch.Tensor | None = None,
        grounding_pair_index: torch.Tensor | None = None,
        video_pair_index: torch.Tensor | None = None,
        text_pair_index: torch.Tensor | None = None,
        top_k_windows: int | None = None,
        pair_query_index: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> RGNetVideoGroundingOutput:
        r"""
        Args:
            video_features, video_mask, text_features, text_mask, input_ids, attention_mask, selector_noise,
            video_pair_index, text_pair_index, output_attentions, output_hidden_states:
                See [`RGNetModel.forward`].
            grounding_pair_index (`torch.LongTensor` of shape `(G,)`, *optional*):
                Pairs that get moment predictions and saliency (see [`RGNetModel.forward`]); with `labels` it must
                hold every row the loss reads: the positives (`"cross_pairs"`: `torch.arange(B) * (B + 1)` skips
                the decoder for the `B² − B` pairs that only enter the retrieval loss), or all `2B` pairs
                (`"paired_negative"`). `None` (default) = every pair.
            labels ([`RGNetLabels`], *optional*):
                `batch_mode` (`"cross_pairs"` or `"paired_negative"`), `spans` `(B, 2)` target `(center, width)`
                per positive window, `saliency_positive_frames` / `saliency_negative_frames` `(B, K)` frame indices
                inside / outside the target. The pair count must follow the batch mode (see the class docstring).
            top_k_windows (`int`, *optional*):
                Inference on long videos: ground only each query's `top_k_windows` best-scored windows (and windows
                tied with the last of them, see [`select_top_windows`]), the ones post-processing pools (spec §7
                step 3; pass the processor's `top_k_windows`). Window logits are computed for every pair first (the
                last retrieval-encoder layer on the global row alone); the last layer's frame rows, the fusion and the
                decoder then run on the chosen pairs only, about 30 % less model time on a 2-hour MAD movie (81 windows,
                30 kept). Every window of a query must be in the same call. The `G`-row outputs then carry
                `grounding_pair_index`, which post-processing reads. Not with `labels` or `grounding_pair_index`.
            pair_query_index (`torch.LongTensor` of shape `(N,)`, *optional*):
                Query of each pair, for `top_k_windows` (the processor's `window_metadata.pair_query_index`).
                `None`: `text_pair_index` when given (each query's text held once), else all pairs belong to one
                query (pairs whose texts differ raise an error).
            return_dict (`bool`, *optional*):
                `False` returns `to_tuple()` of the output, `loss` first when computed; defaults to
                `config.return_dict`.

        Example:

        ```python
        >>> import torch
        >>> from configuration_rgnet import RGNetConfig
        >>> from modeling_rgnet import RGNetForVideoGrounding
        >>> config = RGNetConfig(hidden_size=32, num_attention_heads=4, ffn_dim=64, video_feature_dim=16,
        ...                      text_feature_dim=24, max_window_frames=12)
        >>> model = RGNetForVideoGrounding(config).eval()
        >>> outputs = model(video_features=torch.randn(2, 12, 16), video_mask=torch.ones(2, 12),
        ...                 text_features=torch.randn(2, 5, 24), text_mask=torch.ones(2, 5))
        >>> outputs.pred_spans.shape, outputs.window_logits.shape
        (torch.Size([2, 5, 2]), torch.Size([2, 1]))
        ```
        """
        # The arguments read before the base model checks its inputs are checked first.
        _check_output_flags(self.config, output_attentions, output_hidden_states)
        _check_video_features(video_features, self.config)
        if video_pair_index is not None:
            _check_row_index("video_pair_index", video_pair_index, video_features.shape[0], "`video_features` windows")
        num_pairs = video_features.shape[0] if video_pair_index is None else len(video_pair_index)
        if labels is not None:
            validate_labels(labels, num_pairs=num_pairs, num_frames=video_features.shape[1])
        choose_grounding_pairs = None
        if top_k_windows is not None:
            shares_queries = isinstance(text_pair_index, torch.Tensor) and text_pair_index.dtype == torch.int64
            if pair_query_index is None and shares_queries:  # each query's text held once: its pairs
                pair_query_index = text_pair_index
            choose_grounding_pairs = self._top_windows_chooser(
                top_k_windows, pair_query_index, num_pairs, labels, grounding_pair_index
            )
            if pair_query_index is None and _rows_differ(text_features if input_ids is None else input_ids):
                # One query per call is the default; pairs with different texts are several queries, whose windows
                # would be ranked against each other.
                raise ValueError(
                    "`top_k_windows` with pairs of different queries needs `pair_query_index` (the query of each "
                    "pair, e.g. `inputs.window_metadata.pair_query_index`) or `text_pair_index`."
                )
        elif pair_query_index is not None:
            raise ValueError("`pair_query_index` is only used with `top_k_windows`.")
        model_outputs = self.model(
            video_features,
            video_mask,
            text_features=text_features,
            text_mask=text_mask,
            input_ids=input_ids,
            attention_mask=attention_mask,
            selector_noise=selector_noise,
            grounding_pair_index=grounding_pair_index,
            video_pair_index=video_pair_index,
            text_pair_index=text_pair_index,
            choose_grounding_pairs=choose_grounding_pairs,
            return_dict=True,
        )
        grounding_pair_index = model_outputs.grounding_pair_index
        decoder_hidden_states = model_outputs.decoder_hidden_states  # (L, G, Q, D)
        # The prediction heads and the span arithmetic run in float32, or float64 (see `run_head_in_float32`).
        all_logits = run_head_in_float32(self.class_head, decoder_hidden_states)  # (L, G, Q, 2)
        span_offsets = run_head_in_float32(self.span_head, decoder_hidden_states)
        reference_anchors = model_outputs.reference_anchors
        reference_anchors = reference_anchors.to(torch.promote_types(span_offsets.dtype, reference_anchors.dtype))
        all_spans = (span_offsets + inverse_sigmoid(reference_anchors)).sigmoid()
        global_hidden = model_outputs.global_hidden_state
        frame_hidden = model_outputs.encoder_last_hidden_state
        window_logits = run_head_in_float32(self.retrieval_head, global_hidden)  # (N, 1)
        grounded_global = global_hidden if grounding_pair_index is None else global_hidden[grounding_pair_index]
        saliency_scores = (
            self.saliency_frame_proj(frame_hidden) * self.saliency_global_proj(grounded_global)[:, None]
        ).sum(-1) / math.sqrt(self.config.hidden_size)  # (G, Lv)
        auxiliary_outputs = [
            {"logits": all_logits[layer], "pred_spans": all_spans[layer]} for layer in range(all_logits.shape[0] - 1)
        ]
        outputs = RGNetVideoGroundingOutput(
            logits=all_logits[-1],
            pred_spans=all_spans[-1],
            window_logits=window_logits,
            saliency_scores=saliency_scores,
            frame_selection=model_outputs.frame_selection,
            selector_logits=model_outputs.selector_logits,
            auxiliary_outputs=auxiliary_outputs,
            reference_anchors=model_outputs.reference_anchors,
            decoder_hidden_states=decoder_hidden_states,
            encoder_last_hidden_state=frame_hidden,
            global_hidden_state=global_hidden,
            grounding_pair_index=grounding_pair_index,
        )
        if labels is not None:
            pair_video_mask = video_mask if video_pair_index is None else video_mask[video_pair_index]
            loss, loss_terms, metrics = self.criterion(outputs, labels, video_mask=pair_video_mask)
            # Built again so that `loss` comes first in `to_tuple()`, as transformers' training loops expect.
            outputs = RGNetVideoGroundingOutput(loss=loss, loss_dict={**loss_terms, **metrics}, **outputs)
        return outputs

    def _top_windows_chooser(self, top_k_windows, pair_query_index, num_pairs, labels, grounding_pair_index):
        """The `choose_grounding_pairs` function of `top_k_windows` inference, after checking its arguments."""
        if labels is not None or grounding_pair_index is not None:
            raise ValueError("`top_k_windows` is for inference: pass neither `labels` nor `grounding_pair_index`.")
        if isinstance(top_k_windows, bool) or not isinstance(top_k_windows, int) or top_k_windows < 1:
            raise ValueError(f"`top_k_windows` must be a positive integer, got {top_k_windows!r}.")
        if isinstance(pair_query_index, np.ndarray) and np.issubdtype(pair_query_index.dtype, np.integer):
            pair_query_index = torch.from_numpy(pair_query_index.astype(np.int64))  # as `window_metadata` holds it
        if pair_query_index is None:
            pair_query_index = torch.zeros(num_pairs, dtype=torch.int64)
        elif (
            not isinstance(pair_query_index, torch.Tensor)
            or pair_query_index.dtype != torch.int64
            or tuple(pair_query_index.shape) != (num_pairs,)
        ):
            raise ValueError(
                f"`pair_query_index` must be an int64 tensor of shape ({num_pairs},) (the query of each pair); "
                f"got {pair_query_index!r}."
            )

        def choose(global_hidden: torch.Tensor) -> torch.Tensor:
            window_logits = run_head_in_float32(self.retrieval_head, global_hidden)  # the values returned
            return select_top_windows(window_logits, pair_query_index, top_k_windows)

        return choose


# Used from a checkout or an installed package, `AutoModel` resolves "rgnet" here (configuration_rgnet.py registers
# the config for `AutoConfig`). `AutoModel` gets both classes: transformers then picks the one a saved folder's
# `config.architectures` names, as the folder's `auto_map` does, and the grounding model for a config without one
# (`from_config`, a preset). Loaded from a saved folder as remote code, the module leaves the Auto mappings alone:
# transformers prefers a registered class to a folder's `auto_map`, so registering there would make the next
# `AutoModel.from_pretrained` of another folder return that folder's class.
if not __name__.startswith("transformers_modules"):
    AutoModel.register(RGNetConfig, (RGNetForVideoGrounding, RGNetModel), exist_ok=True)
RGNetModel.register_for_auto_class("AutoModel")
RGNetForVideoGrounding.register_for_auto_class("AutoModel")

__all__ = [
    "RGNetForVideoGrounding",
    "RGNetKeyPaddingMask",
    "RGNetModel",
    "RGNetModelOutput",
    "RGNetPreTrainedModel",
    "RGNetSelectorMask",
    "RGNetVideoGroundingOutput",
    "anchor_sine_embedding",
    "at_least_float32",
    "build_selector_attention_bias",
    "computes_plain_linear",
    "cpu_inference_linear",
    "inverse_sigmoid",
    "key_padding_attention",
    "linear_relu",
    "logsumexp_attention_kernel",
    "pairs_with_padded_frames",
    "run_head_in_float32",
    "select_top_windows",
    "selector_attention",
    "video_sine_position_encoding",
]
