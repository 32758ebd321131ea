"""RGNet configuration and the published recipe presets.

RGNet (Hannan et al., "RGNet: A Unified Clip Retrieval and Grounding Network for Long Videos", ECCV 2024,
arXiv:2312.06729) grounds a sentence in a long video by scoring fixed-length, half-overlapping windows of
pre-extracted frame features and predicting moment spans inside them. This file holds `RGNetConfig` and the
presets of the three published recipes (MAD, Ego4D NaQ pretraining, Ego4D-NLQ finetuning).

Field names follow the implementation specification (`rgnet-spec.md` §3); where transformers has a standard
name (`hidden_size`, `num_attention_heads`, `dropout`) it is used.
"""

import copy
import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging

logger = logging.get_logger(__name__)


SELECTOR_ATTENTION_MODES = ("additive_unit_bias", "hard_mask")
PAIR_MODES = ("cross_pairs", "paired_negative")
# The class head's two classes, in the order of its logits (spec §3.1: index 0 = foreground).
CLASS_NAMES = ("foreground", "background")
QUERY_NORMALIZATIONS = ("mad", "ego4d")

# Overrides of the defaults for each published recipe (spec §3.1-3.3). Optimiser, schedule, epochs, batch
# size and seeds are training settings and live with the training scripts, not here.
_EGO4D_ARCHITECTURE = {
    "video_feature_dim": 256,
    "text_feature_dim": 512,
    "pooled_text_dim": 256,
    "max_window_frames": 90,
    "max_text_tokens": 20,
    "seconds_per_frame": 0.535,
    "video_position_temperature": 10000.0,
    "query_normalization": "ego4d",
    "top_k_windows": 20,
    "scale_matching_by_window_score": True,
}
RGNET_PRESETS: dict[str, dict] = {
    "mad": {
        "video_feature_dim": 512,
        "text_feature_dim": 512,
        "pooled_text_dim": 512,
        "max_window_frames": 900,
        "max_text_tokens": 25,
        "seconds_per_frame": 0.2,
        "video_position_temperature": 100.0,
        "query_normalization": "mad",
        "retrieval_loss_weight": 10.0,
        "pair_mode": "cross_pairs",
        "top_k_windows": 30,
        "scale_matching_by_window_score": False,
    },
    "ego4d-naq-pretrain": {**_EGO4D_ARCHITECTURE, "retrieval_loss_weight": 1.0, "pair_mode": "cross_pairs"},
    "ego4d-nlq-finetune": {**_EGO4D_ARCHITECTURE, "retrieval_loss_weight": 0.0, "pair_mode": "paired_negative"},
}
# Other spellings accepted by `from_preset` (the training script's recipe names use underscores).
_PRESET_ALIASES = {"ego4d-finetune": "ego4d-nlq-finetune", "ego4d-pretrain": "ego4d-naq-pretrain"}


@strict
class RGNetConfig(PreTrainedConfig):
    r"""
    Configuration of an RGNet model ([`RGNetModel`], [`RGNetForVideoGrounding`]) and of its processor's
    windowing and post-processing. The defaults are the specification's generic defaults; use
    [`RGNetConfig.from_preset`] for the published recipes (`"mad"`, `"ego4d-naq-pretrain"`,
    `"ego4d-nlq-finetune"`).

    Architecture (spec §3.1, §5). The spec's variant switches that every recipe and released checkpoint leaves on
    (`fuse_global_into_selected`, `anchor_head_per_layer`, `keep_query_position_in_all_layers`, `modulate_width`)
    are built in, not fields: the global token is fused into the selected frames, each decoder layer has its own
    anchor-update head, the query position enters every cross-attention layer, and the anchor width modulates it.
        video_feature_dim (`int`, *optional*, defaults to 512):
            Width of the per-frame video features. MAD: 512 (CLIP ViT-B/32); Ego4D: 256 (EgoVLP).
        text_feature_dim (`int`, *optional*, defaults to 512):
            Width of the query token features (CLIP text-transformer token states). Must equal
            `text_config.hidden_size` when a text encoder is configured.
        pooled_text_dim (`int`, *optional*, defaults to 512):
            Width of the sentence embedding used by the matching score at inference (spec §7.4), recorded with the
            model; neither the model nor the processor reads it. The score is a cosine with the frame features, so
            the embeddings must be `video_feature_dim` wide (post-processing checks them); `from_preset` keeps the two
            equal when only `video_feature_dim` is overridden. MAD: 512; Ego4D: 256.
        hidden_size (`int`, *optional*, defaults to 256):
            Model width `D`.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Heads `H` of every attention block; must divide `hidden_size`.
        num_text_to_video_layers (`int`, *optional*, defaults to 2):
            Depth of the text-to-video cross-attention encoder (spec §5.3).
        num_encoder_layers (`int`, *optional*, defaults to 2):
            Depth of the self-attention retrieval encoder over `[global token; frames]` (spec §5.5).
        num_decoder_layers (`int`, *optional*, defaults to 6):
            Depth of the anchor decoder (spec §5.7). The first `num_decoder_layers - 1` layers feed the
            auxiliary losses.
        ffn_dim (`int`, *optional*, defaults to 2048):
            Inner width of every feed-forward block.
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout on residual branches, inside feed-forward blocks and on attention probabilities.
        input_dropout (`float`, *optional*, defaults to 0.5):
            Dropout inside the input projections (spec §5.1).
        num_moment_queries (`int`, *optional*, defaults to 5):
            Moment proposals `Q` per window (decoder anchors).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every LayerNorm.
        video_position_temperature (`float`, *optional*, defaults to 10000.0):
            Temperature of the sine position encoding of the frames. MAD: 100; Ego4D: 10000.
        selector_temperature (`float`, *optional*, defaults to 0.3):
            Temperature of the frame selector's relaxed Bernoulli gate (official `gumbel_eps`).
        selector_attention_mode (`str`, *optional*, defaults to `"additive_unit_bias"`):
            How the frame selector's gate shapes the retrieval encoder's attention (spec §5.5):
            `"additive_unit_bias"` (+1 on every key except itself for non-selected frames; what the released
            checkpoints were trained with) or `"hard_mask"` (the paper: non-selected frames attend only to
            themselves).
        emulate_text_mask_head_ordering (`bool`, *optional*, defaults to `False`):
            Reproduce the original implementation's batch-dependent text-to-video mask (pair `n`, head `h` uses
            the padding of pair `(n·H + h) mod N`, spec §5.3). Only for reproducing the original's batch-level
            numbers bit for bit; leave off otherwise.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of an optional text encoder (e.g. a `CLIPTextConfig`). When set, the model also takes
            `input_ids`/`attention_mask` and computes query token features itself (final-LayerNorm token states,
            start/end tokens removed, L2-normalised, spec §2). When `None` (default) the model takes precomputed
            `text_features`/`text_mask`.
        freeze_text_encoder (`bool`, *optional*, defaults to `True`):
            Keep the text encoder fixed in training: its weights get no gradient and it stays in eval mode, as the
            frozen, pre-extracted text features of the published recipes (spec §2). `False` trains it with the rest
            (e.g. an encoder built from a bare `text_config`, without pretrained weights). Read when the model is
            built.

    Loss and matching (spec §3.2, §6.3-6.4):
        span_l1_loss_weight (`float`, *optional*, defaults to 10.0):
            Weight of the L1 loss between matched spans and targets (center, width).
        giou_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the `1 - GIoU` loss of matched spans.
        label_loss_weight (`float`, *optional*, defaults to 4.0):
            Weight of the foreground/background cross-entropy over all moment slots.
        background_class_weight (`float`, *optional*, defaults to 0.1):
            Class weight of the background class in the label cross-entropy (DETR's `eos_coef`).
        saliency_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the saliency ranking loss (the paper's attention loss) and, in paired-negative batches,
            of the negative-window terms.
        saliency_margin (`float`, *optional*, defaults to 0.2):
            Margin of the saliency ranking hinge.
        retrieval_loss_weight (`float`, *optional*, defaults to 4.0):
            Weight of the window retrieval loss: symmetric InfoNCE over the `B×B` cross pairs, or a hinge on
            (positive, negative) window logits in paired-negative batches. `0` skips the term. MAD: 10; Ego4D NaQ
            pretraining: 1; Ego4D finetuning: 0.
        retrieval_margin (`float`, *optional*, defaults to 0.2):
            Margin of the paired-negative retrieval hinge.
        contrastive_temperature (`float`, *optional*, defaults to 0.07):
            Temperature of the retrieval InfoNCE.
        matcher_span_l1_cost (`float`, *optional*, defaults to 10.0):
            Hungarian matching cost weight of the span L1 distance.
        matcher_giou_cost (`float`, *optional*, defaults to 1.0):
            Hungarian matching cost weight of the negative GIoU.
        matcher_class_cost (`float`, *optional*, defaults to 4.0):
            Hungarian matching cost weight of the negative foreground probability.
        use_auxiliary_loss (`bool`, *optional*, defaults to `True`):
            Add span, GIoU and label losses for every decoder layer but the last.
        pair_mode (`str`, *optional*, defaults to `"cross_pairs"`):
            How training batches are built (spec §6.2); read by the data collator and the trainer.
            `"cross_pairs"`: `B` queries × their `B` positive windows, all `B²` pairs in one forward.
            `"paired_negative"`: each query with its positive and one negative window of the same video.

    The loss and matching fields are read when the loss is computed: changing them on `model.config` after loading
    (e.g. `retrieval_loss_weight = 0` to finetune a pretrained model) takes effect at the next forward. The class
    head is binary: `num_labels` must be 2, and `id2label` defaults to `{0: "foreground", 1: "background"}`.

    Windowing and inference (spec §3.3, §6.1, §7), read by `RGNetProcessor`:
        max_window_frames (`int`, *optional*, defaults to 90):
            Window length in frames. MAD: 900 (180 s); Ego4D: 90 (≈48 s).
        window_stride (`int`, *optional*):
            Frames between consecutive window starts, smaller than `max_window_frames`; `None` means half a window
            (all recipes). Resolved when the config is built and saved as a number: a config loaded with another
            `max_window_frames` keeps its stride unless `window_stride` is given too.
        max_text_tokens (`int`, *optional*, defaults to 20):
            Query tokens kept (longer queries are truncated). MAD: 25; Ego4D: 20.
        seconds_per_frame (`float`, *optional*, defaults to 0.2):
            Duration of one feature frame in seconds. MAD: 0.2; Ego4D: 0.535.
        query_normalization (`str`, *optional*, defaults to `"mad"`):
            Query text normalisation convention of spec §2: `"mad"` (strip `.`, spaces and `?`, append `.`) or
            `"ego4d"` (lower-case, strip, append `?`).
        top_k_windows (`int`, *optional*, defaults to 30):
            Best-ranked windows whose proposals are kept. MAD: 30; Ego4D: 20.
        nms_threshold (`float`, *optional*, defaults to 0.5):
            Temporal NMS suppresses a candidate whose IoU with a kept one is strictly greater than this.
        max_candidates_before_nms (`int`, *optional*, defaults to 200):
            Candidates (sorted by fused score) that enter NMS.
        max_predictions (`int`, *optional*, defaults to 100):
            Ranked moments returned per query.
        matching_top_k_frames (`int`, *optional*, defaults to 3):
            Frames whose cosine similarities to the sentence embedding are summed in the matching score.
        scale_matching_by_window_score (`bool`, *optional*, defaults to `False`):
            Multiply the matching score by the window score (Ego4D: `True`).

    Example:

    ```python
    >>> from configuration_rgnet import RGNetConfig
    >>> config = RGNetConfig.from_preset("mad")
    >>> config.max_window_frames, config.window_stride, config.retrieval_loss_weight
    (900, 450, 10.0)
    ```
    """

    model_type = "rgnet"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_text_model", optional=True),
    }

    # ---- architecture (spec §3.1) ----
    video_feature_dim: int = 512
    text_feature_dim: int = 512
    pooled_text_dim: int = 512
    hidden_size: int = 256
    num_attention_heads: int = 8
    num_text_to_video_layers: int = 2
    num_encoder_layers: int = 2
    num_decoder_layers: int = 6
    ffn_dim: int = 2048
    dropout: float | int = 0.1
    input_dropout: float | int = 0.5
    num_moment_queries: int = 5
    layer_norm_eps: float | int = 1e-5
    video_position_temperature: float | int = 10000.0
    # ---- variant switches ----
    selector_temperature: float | int = 0.3
    selector_attention_mode: str = "additive_unit_bias"
    emulate_text_mask_head_ordering: bool = False
    text_config: dict | PreTrainedConfig | None = None
    freeze_text_encoder: bool = True
    # ---- loss and matching (spec §3.2) ----
    span_l1_loss_weight: float | int = 10.0
    giou_loss_weight: float | int = 1.0
    label_loss_weight: float | int = 4.0
    background_class_weight: float | int = 0.1
    saliency_loss_weight: float | int = 1.0
    saliency_margin: float | int = 0.2
    retrieval_loss_weight: float | int = 4.0
    retrieval_margin: float | int = 0.2
    contrastive_temperature: float | int = 0.07
    matcher_span_l1_cost: float | int = 10.0
    matcher_giou_cost: float | int = 1.0
    matcher_class_cost: float | int = 4.0
    use_auxiliary_loss: bool = True
    pair_mode: str = "cross_pairs"
    # ---- windowing and inference (spec §3.3) ----
    max_window_frames: int = 90
    window_stride: int | None = None
    max_text_tokens: int = 20
    seconds_per_frame: float | int = 0.2
    query_normalization: str = "mad"
    top_k_windows: int = 30
    nms_threshold: float | int = 0.5
    max_candidates_before_nms: int = 200
    max_predictions: int = 100
    matching_top_k_frames: int = 3
    scale_matching_by_window_score: bool = False

    def __post_init__(self, **kwargs):
        # `AutoModel` picks between the two RGNet classes by `architectures` (a saved model writes its own class there);
        # without one (a new config, or one saved before) it is the model with heads: transformers' choice iterates over
        # the field without a `None` check.
        if self.architectures is None:
            self.architectures = ["RGNetForVideoGrounding"]
        if self.window_stride is None:
            if isinstance(self.max_window_frames, int) and not isinstance(self.max_window_frames, bool):
                if self.max_window_frames < 2:
                    raise ValueError(
                        f"`max_window_frames` must be at least 2 (the default `window_stride` is half a window), got "
                        f"{self.max_window_frames}."
                    )
                self.window_stride = self.max_window_frames // 2
        super().__post_init__(**kwargs)
        if self.id2label == {0: "LABEL_0", 1: "LABEL_1"}:  # transformers' default names for the two classes
            self.id2label = dict(enumerate(CLASS_NAMES))
            self.label2id = {name: index for index, name in self.id2label.items()}
        # Checked here so that a plain `ValueError` reaches the user at construction; `validate_fields` checks again
        # when the config is saved (fields set after construction are type-checked as they are set, not checked
        # against each other).
        self._check_fields()

    def validate_fields(self):
        """The checks of construction, run by `validate()` (which `save_pretrained` calls)."""
        self._check_fields()

    def _check_fields(self):
        positive_ints = (
            "video_feature_dim",
            "text_feature_dim",
            "pooled_text_dim",
            "hidden_size",
            "num_attention_heads",
            "num_text_to_video_layers",
            "num_encoder_layers",
            "num_decoder_layers",
            "ffn_dim",
            "num_moment_queries",
            "max_window_frames",
            "window_stride",
            "max_text_tokens",
            "top_k_windows",
            "max_candidates_before_nms",
            "max_predictions",
            "matching_top_k_frames",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.num_labels != len(CLASS_NAMES):
            raise ValueError(
                f"`num_labels` must be {len(CLASS_NAMES)} ({', '.join(CLASS_NAMES)}): RGNet's class head scores each "
                f"moment as foreground or background; got {self.num_labels} (`id2label` = {self.id2label})."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.hidden_size % 4 != 0:
            # The anchor sine embedding gives hidden/2 features per coordinate as (sin, cos) pairs.
            raise ValueError(f"`hidden_size` must be a multiple of 4, got {self.hidden_size}.")
        if self.window_stride >= self.max_window_frames:
            # Window i starts at (i - 1) * stride: a stride of a whole window or more leaves window 0 empty.
            raise ValueError(
                f"`window_stride` ({self.window_stride}) must be smaller than `max_window_frames` "
                f"({self.max_window_frames})."
            )
        if self.selector_attention_mode not in SELECTOR_ATTENTION_MODES:
            raise ValueError(
                f"Unknown `selector_attention_mode` {self.selector_attention_mode!r}; "
                f"expected one of {SELECTOR_ATTENTION_MODES}."
            )
        if self.pair_mode not in PAIR_MODES:
            raise ValueError(f"Unknown `pair_mode` {self.pair_mode!r}; expected one of {PAIR_MODES}.")
        if self.query_normalization not in QUERY_NORMALIZATIONS:
            raise ValueError(
                f"Unknown `query_normalization` {self.query_normalization!r}; expected one of {QUERY_NORMALIZATIONS}."
            )
        positive_numbers = (
            "selector_temperature",
            "contrastive_temperature",
            "seconds_per_frame",
            "video_position_temperature",
            "layer_norm_eps",
        )
        non_negative_numbers = (
            "span_l1_loss_weight",
            "giou_loss_weight",
            "label_loss_weight",
            "background_class_weight",
            "saliency_loss_weight",
            "retrieval_loss_weight",
            "saliency_margin",
            "retrieval_margin",
            "matcher_span_l1_cost",
            "matcher_giou_cost",
            "matcher_class_cost",
        )
        # A NaN or an infinity here turns every loss, score or second it touches into one.
        for name in ("dropout", "input_dropout", "nms_threshold", *positive_numbers, *non_negative_numbers):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        for name in ("dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        for name in positive_numbers:
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        for name in non_negative_numbers:
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)}.")
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ValueError(f"`nms_threshold` must be in [0, 1], got {self.nms_threshold}.")
        if self.matcher_span_l1_cost == self.matcher_giou_cost == self.matcher_class_cost == 0:
            # `RGNetForVideoGrounding` builds its matcher from them; with every cost 0 it has nothing to match on.
            raise ValueError(
                "`matcher_span_l1_cost`, `matcher_giou_cost` and `matcher_class_cost` are all 0; at least one must be "
                "positive for the Hungarian matching of moments to targets."
            )
        text_width = getattr(self.text_config, "hidden_size", None)
        if self.text_config is not None and not isinstance(text_width, int):
            # E.g. a whole `CLIPConfig` (text and vision towers): its model would not take `input_ids` alone.
            raise ValueError(
                f"`text_config` must configure a text encoder with a `hidden_size`, e.g. a `CLIPTextConfig`; got a "
                f"{type(self.text_config).__name__} without one (pass a dual-encoder config's `.text_config`)."
            )
        if self.text_config is not None and text_width != self.text_feature_dim:
            raise ValueError(
                f"`text_config.hidden_size` ({self.text_config.hidden_size}) must equal `text_feature_dim` "
                f"({self.text_feature_dim}): the text encoder's token states are the query features."
            )

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        # Configs written by earlier versions of the training script may hold 0/1 for booleans (it parsed values as
        # JSON); the type checks would reject them.
        config_dict = {
            key: bool(value) if key in _BOOL_FIELDS and type(value) is int and value in (0, 1) else value
            for key, value in config_dict.items()
        }
        loaded = super().from_dict(config_dict, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        # Keyword overrides are set after construction: resolve a `window_stride=None` override as construction
        # does, and check the fields against each other again.
        if config.window_stride is None and isinstance(config.max_window_frames, int):
            config.window_stride = config.max_window_frames // 2
        config._check_fields()
        return loaded

    @property
    def negative_window_losses(self) -> bool:
        """Whether training adds the negative-window terms of spec §6.4 (derived from `pair_mode`)."""
        return self.pair_mode == "paired_negative"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "RGNetConfig":
        """Build the configuration of a published recipe, optionally overriding fields.

        Args:
            name (`str`):
                `"mad"`, `"ego4d-naq-pretrain"` or `"ego4d-nlq-finetune"` (underscores are accepted for hyphens).
            **overrides:
                Any `RGNetConfig` field, applied on top of the preset.
        """
        if not isinstance(name, str):
            raise TypeError(f"`name` must be a preset name (str), one of {sorted(RGNET_PRESETS)}, got {name!r}.")
        key = name.strip().lower().replace("_", "-")
        key = _PRESET_ALIASES.get(key, key)
        if key not in RGNET_PRESETS:
            raise ValueError(f"Unknown RGNet preset {name!r}; expected one of {sorted(RGNET_PRESETS)}.")
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown RGNetConfig field(s) {sorted(unknown)} passed to `from_preset`.")
        if "video_feature_dim" in overrides and "pooled_text_dim" not in overrides:
            # The sentence embedding lives in the frame feature space.
            overrides["pooled_text_dim"] = overrides["video_feature_dim"]
        return cls(**{**copy.deepcopy(RGNET_PRESETS[key]), **overrides})


_BOOL_FIELDS = frozenset(name for name, field_ in RGNetConfig.__dataclass_fields__.items() if field_.type is bool)

# Registered here, not with the models: a config saved by a process that imported only this file (e.g. the presets of
# scripts/make_preset_configs.py) carries this file and `auto_map`, as one saved with the model does, and `AutoConfig`
# resolves "rgnet" without the models. Loaded from a saved folder as remote code, the module leaves `AutoConfig` alone
# (see the registration of the models at the end of modeling_rgnet.py).
if not __name__.startswith("transformers_modules"):
    AutoConfig.register("rgnet", RGNetConfig, exist_ok=True)
RGNetConfig.register_for_auto_class()

__all__ = [
    "RGNetConfig",
    "RGNET_PRESETS",
    "CLASS_NAMES",
    "PAIR_MODES",
    "QUERY_NORMALIZATIONS",
    "SELECTOR_ATTENTION_MODES",
]
