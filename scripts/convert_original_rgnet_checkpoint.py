"""Convert an original RGNet checkpoint into a `save_pretrained` folder of `RGNetForVideoGrounding`.

Accepted inputs:

* a `.ckpt`/`.pth` file saved by the original training loop: a dict with `model` (the state dict) and `opt`
  (the training options, an argparse namespace or a dict);
* a state-dict file (`.ckpt`, `.pth`, `.bin` or `.safetensors`) plus `--original_options options.json`.

The key map follows spec §4. Packed q/k/v projections are split; the modules the original builds but never
uses (`saliency_proj`, `txt_position_embed`, the last decoder layer's anchor-update head) are dropped and reported
by name. Any other missing or unexpected key is an error.

Usage:
    python scripts/convert_original_rgnet_checkpoint.py --checkpoint model_best.ckpt --output_dir rgnet-mad
"""

from __future__ import annotations

import logging
import re
import sys
from argparse import Namespace
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from configuration_rgnet import RGNetConfig  # noqa: E402
from data_rgnet import read_json  # noqa: E402
from modeling_rgnet import RGNetForVideoGrounding  # noqa: E402
from processing_rgnet import RGNetProcessor  # noqa: E402
from scripts.cli import run_script, script_parser  # noqa: E402

logger = logging.getLogger("convert_original_rgnet_checkpoint")

# Official layer-internal names → module paths of this package (spec §4).
_ENCODER_LAYER_MAP = {
    "self_attn.out_proj": "attn.out_proj",
    "linear1": "ffn.fc1",
    "linear2": "ffn.fc2",
    "norm1": "attn_norm",
    "norm2": "ffn_norm",
}
_DECODER_LAYER_MAP = {
    "sa_qcontent_proj": "self_attn.q_content",
    "sa_qpos_proj": "self_attn.q_pos",
    "sa_kcontent_proj": "self_attn.k_content",
    "sa_kpos_proj": "self_attn.k_pos",
    "sa_v_proj": "self_attn.v",
    "self_attn.out_proj": "self_attn.out_proj",
    "norm1": "self_attn.norm",
    "ca_qcontent_proj": "cross_attn.q_content",
    "ca_qpos_proj": "cross_attn.q_pos",
    "ca_kcontent_proj": "cross_attn.k_content",
    "ca_kpos_proj": "cross_attn.k_pos",
    "ca_v_proj": "cross_attn.v",
    "ca_qpos_sine_proj": "cross_attn.q_sine",
    "cross_attn.out_proj": "cross_attn.out_proj",
    "norm2": "cross_attn.norm",
    "linear1": "ffn.ffn.fc1",
    "linear2": "ffn.ffn.fc2",
    "norm3": "ffn.norm",
}
_DIRECT_MAP = {
    "global_rep_token": "model.global_token",
    "global_rep_pos": "model.global_position",
    "query_embed.weight": "model.anchor_embeddings",
    "transformer.prop_instance": "model.frame_selector.dense",
    "transformer.decoder.norm": "model.decoder.layernorm",
    "transformer.decoder.query_scale": "model.decoder.query_scale",
    "transformer.decoder.ref_point_head": "model.decoder.anchor_position_head",
    "transformer.decoder.ref_anchor_head": "model.decoder.width_modulation_head",
    "class_embed": "class_head",
    "span_embed": "span_head",
    "saliency_proj1": "saliency_frame_proj",
    "saliency_proj2": "saliency_global_proj",
    "saliency_proj3": "retrieval_head",
}
_UNUSED_PREFIXES = ("saliency_proj.", "txt_position_embed.")


def _map_key(key: str, num_decoder_layers: int) -> str | None:
    """Map one official key to this package's key; `None` for a known-unused key. Raises on an unknown key."""
    if key.startswith(_UNUSED_PREFIXES):
        return None
    match = re.fullmatch(r"input_(txt|vid)_proj\.(\d+)\.(LayerNorm|net\.1)\.(weight|bias)", key)
    if match:
        modality = "text" if match[1] == "txt" else "video"
        part = "norm" if match[3] == "LayerNorm" else "dense"
        return f"model.{modality}_projection.blocks.{match[2]}.{part}.{match[4]}"
    match = re.fullmatch(r"transformer\.(t2v_encoder|encoder)\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if match:
        stack = "text_to_video" if match[1] == "t2v_encoder" else "encoder"
        if match[3] in _ENCODER_LAYER_MAP:
            return f"model.{stack}.layers.{match[2]}.{_ENCODER_LAYER_MAP[match[3]]}.{match[4]}"
    match = re.fullmatch(r"transformer\.decoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if match and match[2] in _DECODER_LAYER_MAP:
        return f"model.decoder.layers.{match[1]}.{_DECODER_LAYER_MAP[match[2]]}.{match[3]}"
    match = re.fullmatch(r"transformer\.decoder\.bbox_embed\.(\d+)\.(layers\.\d+\.(?:weight|bias))", key)
    if match:
        # The original computes an update after the last decoder layer and discards it.
        if int(match[1]) == num_decoder_layers - 1:
            return None
        return f"model.decoder.anchor_update_heads.{match[1]}.{match[2]}"
    for prefix, target in _DIRECT_MAP.items():
        if key == prefix:
            return target
        if key.startswith(prefix + "."):
            return target + key[len(prefix) :]
    raise KeyError(key)


def _without_ddp_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with the `module.` prefix of a DDP-wrapped original model removed from its keys."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def convert_original_state_dict(
    state_dict: dict[str, torch.Tensor], num_decoder_layers: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename and split an original state dict (spec §4).

    Args:
        state_dict (`dict[str, torch.Tensor]`): the original `model` state dict (a `module.` prefix from DDP is
            removed).
        num_decoder_layers (`int`): decoder depth, to recognise the unused last anchor-update head.

    Returns:
        `(converted, dropped)`: the state dict for `RGNetForVideoGrounding` and the dropped unused keys.

    Raises:
        `ValueError` naming every key that has no place in the model.
    """
    converted, dropped, unknown = {}, [], []
    for key, tensor in _without_ddp_prefix(state_dict).items():
        packed = re.fullmatch(
            r"transformer\.(t2v_encoder|encoder)\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)", key
        )
        if packed:
            stack = "text_to_video" if packed[1] == "t2v_encoder" else "encoder"
            # Rows 0..D-1 project queries, D..2D-1 keys, 2D..3D-1 values.
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                converted[f"model.{stack}.layers.{packed[2]}.attn.{name}.{packed[3]}"] = chunk.clone()
            continue
        try:
            target = _map_key(key, num_decoder_layers)
        except KeyError:
            unknown.append(key)
            continue
        if target is None:
            dropped.append(key)
        else:
            converted[target] = tensor
    if unknown:
        raise ValueError(f"Unexpected keys in the original checkpoint (no place in RGNet): {unknown}")
    return converted, dropped


def _original_key(key: str) -> str:
    """The original name of one of this package's keys (the inverse of the map above): error messages name the
    keys of the checkpoint the user has. A packed q/k/v projection gives its `in_proj_*` key."""
    match = re.fullmatch(r"model\.(text|video)_projection\.blocks\.(\d+)\.(norm|dense)\.(weight|bias)", key)
    if match:
        modality = "txt" if match[1] == "text" else "vid"
        part = "LayerNorm" if match[3] == "norm" else "net.1"
        return f"input_{modality}_proj.{match[2]}.{part}.{match[4]}"
    match = re.fullmatch(r"model\.(text_to_video|encoder)\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if match:
        stack = "t2v_encoder" if match[1] == "text_to_video" else "encoder"
        if match[3] in ("attn.q_proj", "attn.k_proj", "attn.v_proj"):
            return f"transformer.{stack}.layers.{match[2]}.self_attn.in_proj_{match[4]}"
        inverse = {ours: theirs for theirs, ours in _ENCODER_LAYER_MAP.items()}
        if match[3] in inverse:
            return f"transformer.{stack}.layers.{match[2]}.{inverse[match[3]]}.{match[4]}"
    match = re.fullmatch(r"model\.decoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if match:
        inverse = {ours: theirs for theirs, ours in _DECODER_LAYER_MAP.items()}
        if match[2] in inverse:
            return f"transformer.decoder.layers.{match[1]}.{inverse[match[2]]}.{match[3]}"
    match = re.fullmatch(r"model\.decoder\.anchor_update_heads\.(\d+)\.(.+)", key)
    if match:
        return f"transformer.decoder.bbox_embed.{match[1]}.{match[2]}"
    for prefix, target in _DIRECT_MAP.items():
        if key == target:
            return prefix
        if key.startswith(target + "."):
            return prefix + key[len(target) :]
    return key


def check_original_keys(
    state_dict: dict[str, torch.Tensor], model: RGNetForVideoGrounding, dropped: list[str]
) -> None:
    """Check an original state dict against the model its options describe, in the original's key names.

    Args:
        state_dict (`dict[str, torch.Tensor]`): the original `model` state dict (a `module.` prefix is removed).
        model ([`RGNetForVideoGrounding`]): the model built from [`config_from_original`].
        dropped (`list[str]`): the known-unused keys [`convert_original_state_dict`] dropped (not checked).

    Raises:
        `ValueError` naming every original key the model needs that the checkpoint lacks (a missing layer names
        all its keys), every key the model has no place for (a layer deeper than the options say), and every
        tensor of another shape (with both shapes).
    """
    state_dict = _without_ddp_prefix(state_dict)
    expected: dict[str, tuple[int, ...]] = {}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if re.search(r"\.attn\.[qkv]_proj\.(weight|bias)$", name):
            shape = (3 * shape[0], *shape[1:])  # q, k and v stacked in one `in_proj_*` tensor
        expected[_original_key(name)] = shape
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected and key not in dropped]
    problems = []
    if missing:
        problems.append(f"it lacks {len(missing)} key(s) the model needs: {missing}")
    if unexpected:
        problems.append(
            f"it has {len(unexpected)} key(s) the model has no place for (layers beyond the options' depths?): "
            f"{unexpected}"
        )
    wrong = [
        f"{key}: expected {expected[key]}, got {tuple(state_dict[key].shape)}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) have another shape: {wrong}")
    if problems:
        config = model.config
        raise ValueError(
            f"The original checkpoint does not match the model its options describe ({config.hidden_size} wide, "
            f"{config.num_text_to_video_layers} text-to-video, {config.num_encoder_layers} encoder and "
            f"{config.num_decoder_layers} decoder layers): " + "; ".join(problems) + "."
        )


def _options_to_dict(options) -> dict:
    if isinstance(options, Namespace):
        return vars(options)
    if isinstance(options, dict):
        return dict(options)
    raise ValueError(f"`opt` must be an argparse Namespace or a dict; got {type(options).__name__}.")


def config_from_original(options: dict, state_dict: dict[str, torch.Tensor]) -> RGNetConfig:
    """Build the `RGNetConfig` of an original model from its training options and state dict.

    Widths and depths come from the options that built the original model (`hidden_dim`, `dim_feedforward`,
    `num_queries`, `v_motion_feat_dim`, `t_feat_dim`, `enc_layers` for both the text-to-video and the encoder stack,
    `dec_layers`); where an option is not recorded they are read off the weights. Weights that disagree with the
    options are reported by [`check_original_keys`]. Attention heads, temperatures, loss weights and windowing
    come from the options. The inference defaults follow the dataset's preset.

    Raises:
        `ValueError` on an unsupported variant, missing `nheads` or dataset, or a size that neither the options
        nor the weights give (naming the missing original key).
    """
    state_dict = _without_ddp_prefix(state_dict)
    unsupported = {
        "pre_norm": (False,),
        "n_input_proj": (2,),
        "adapter_module": ("none", None),
        "use_txt_pos": (False,),
        "qddetr": (True,),
        "dabdetr": (True,),
        "gumbel": (True,),
    }
    for name, allowed in unsupported.items():
        if name in options and options[name] not in allowed:
            raise ValueError(
                f"Original option `{name}={options[name]!r}` is a variant this package does not implement "
                f"(supported: {allowed})."
            )
    if options.get("nheads") is None:
        raise ValueError("The original options must give `nheads` (attention heads); it cannot be read off weights.")

    def option_int(option: str) -> int | None:
        value = options.get(option)
        if value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"Original option `{option}` must be an integer, got {value!r}.") from None

    def size(option: str, key: str, what: str) -> int:
        if (value := option_int(option)) is not None:
            return value
        if key in state_dict:
            return int(state_dict[key].shape[0])
        raise ValueError(
            f"Cannot tell the {what}: the original options give no `{option}` and the checkpoint lacks the original "
            f"key `{key}`."
        )

    def depth(option: str, prefix: str, what: str) -> int:
        if (value := option_int(option)) is not None:
            return value
        # The highest index, not the count: a missing middle layer is then reported as missing keys.
        indices = {int(match[1]) for key in state_dict if (match := re.match(re.escape(prefix) + r"(\d+)\.", key))}
        if not indices:
            raise ValueError(
                f"Cannot tell the number of {what} layers: the original options give no `{option}` and the "
                f"checkpoint has no `{prefix}<i>.*` keys."
            )
        return max(indices) + 1

    dataset = str(options.get("dset_name", "")).lower()
    if not dataset and options.get("clip_length") is None:
        raise ValueError(
            "The original options give neither `dset_name` nor `clip_length`: the MAD and Ego4D settings they leave "
            "out (frame duration, position temperature, windows kept) cannot be told apart; add `dset_name`."
        )
    if "mad" in dataset or options.get("clip_length") == 0.2:
        preset = "mad"
    else:  # the NLQ finetuning recipe trains with paired negative windows, NaQ pretraining without
        preset = "ego4d-naq-pretrain" if options.get("neg_loss") is False else "ego4d-nlq-finetune"
    fields = {
        # The original's video projection is built from `v_motion_feat_dim` (its appearance features feed only
        # the unused adapter).
        "video_feature_dim": size("v_motion_feat_dim", "input_vid_proj.0.LayerNorm.weight", "video feature width"),
        "text_feature_dim": size("t_feat_dim", "input_txt_proj.0.LayerNorm.weight", "text feature width"),
        "hidden_size": size("hidden_dim", "global_rep_token", "hidden size"),
        "num_attention_heads": option_int("nheads"),
        # `enc_layers` sets both stacks in the original (`build_transformer`).
        "num_text_to_video_layers": depth("enc_layers", "transformer.t2v_encoder.layers.", "text-to-video"),
        "num_encoder_layers": depth("enc_layers", "transformer.encoder.layers.", "encoder"),
        "num_decoder_layers": depth("dec_layers", "transformer.decoder.layers.", "decoder"),
        "ffn_dim": size("dim_feedforward", "transformer.encoder.layers.0.linear1.weight", "feed-forward width"),
        "num_moment_queries": size("num_queries", "query_embed.weight", "number of moment queries"),
    }
    fields["pooled_text_dim"] = fields["video_feature_dim"]
    option_fields = {
        "dropout": "dropout",
        "input_dropout": "input_dropout",
        "max_v_l": "max_window_frames",
        "max_q_l": "max_text_tokens",
        "clip_length": "seconds_per_frame",
        "pos_temperature": "video_position_temperature",
        "gumbel_eps": "selector_temperature",
        "span_loss_coef": "span_l1_loss_weight",
        "giou_loss_coef": "giou_loss_weight",
        "label_loss_coef": "label_loss_weight",
        "eos_coef": "background_class_weight",
        "lw_saliency": "saliency_loss_weight",
        "saliency_margin": "saliency_margin",
        "retrieval_loss_coef": "retrieval_loss_weight",
        "temperature": "contrastive_temperature",
        "set_cost_span": "matcher_span_l1_cost",
        "set_cost_giou": "matcher_giou_cost",
        "set_cost_class": "matcher_class_cost",
        "aux_loss": "use_auxiliary_loss",
    }
    for option, field in option_fields.items():
        if options.get(option) is not None:
            fields[field] = options[option]
    for field in ("max_window_frames", "max_text_tokens"):
        if field in fields:
            fields[field] = int(fields[field])
    fields["use_auxiliary_loss"] = bool(fields.get("use_auxiliary_loss", True))
    if options.get("neg_loss") is not None:
        fields["pair_mode"] = "paired_negative" if options["neg_loss"] else "cross_pairs"
    config = RGNetConfig.from_preset(preset, **fields)
    return config


def load_original_checkpoint(checkpoint: str | Path, original_options: str | Path | None = None):
    """Read an original checkpoint: returns `(state_dict, options_dict)`."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ValueError(f"`--checkpoint` {checkpoint} does not exist.")
    if checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        payload = load_file(str(checkpoint))
    else:
        # The original pickles its options as an argparse Namespace next to the weights.
        try:
            payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception as error:  # any unpickling or archive failure reads the same
            raise ValueError(f"`--checkpoint` {checkpoint} is not a readable PyTorch checkpoint: {error}") from None
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        state_dict, options = payload["model"], payload.get("opt")
    else:
        state_dict, options = payload, None
    if original_options is not None:
        options = read_json(original_options, "--original_options")
    if options is None:
        raise ValueError(
            f"{checkpoint} holds no training options (`opt`); pass them with `--original_options options.json`."
        )
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"`--checkpoint` {checkpoint} holds no state dict (a dict of tensors, or one under `model`).")
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"`--checkpoint` {checkpoint}: the state dict's entries {not_tensors[:10]} are not tensors.")
    return state_dict, _options_to_dict(options)


def convert(checkpoint, output_dir, original_options=None, safe_serialization=True) -> RGNetForVideoGrounding:
    """Convert `checkpoint` and save it to `output_dir` with a feature-only processor (the config's windowing and
    inference settings; `AutoProcessor`, evaluation and grounding read it); returns the loaded model."""
    state_dict, options = load_original_checkpoint(checkpoint, original_options)
    config = config_from_original(options, state_dict)
    converted, dropped = convert_original_state_dict(state_dict, config.num_decoder_layers)
    model = RGNetForVideoGrounding(config)
    check_original_keys(state_dict, model, dropped)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:  # `check_original_keys` reports these in the original's names first
        raise ValueError(f"Conversion mismatch: missing keys {missing}, unexpected keys {unexpected}.")
    if dropped:
        logger.info("Dropped %d unused original keys: %s", len(dropped), ", ".join(dropped))
    model.save_pretrained(output_dir, safe_serialization=safe_serialization)
    processor = RGNetProcessor.from_config(config)
    processor.save_pretrained(output_dir)
    logger.info(
        "Saved RGNetForVideoGrounding (%s parameters) and its processor to %s (windows of %d frames every %d, "
        "%g s per frame, %s query normalisation, top %d windows)",
        f"{model.num_parameters():,}",
        output_dir,
        processor.max_window_frames,
        processor.window_stride,
        processor.seconds_per_frame,
        processor.query_normalization,
        processor.top_k_windows,
    )
    return model


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", required=True, help="original .ckpt (with `model` and `opt`) or state dict")
    parser.add_argument("--output_dir", required=True, help="folder for the converted model (save_pretrained)")
    parser.add_argument("--original_options", default=None, help="JSON of the original training options")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert(args.checkpoint, args.output_dir, args.original_options)


if __name__ == "__main__":
    run_script(main, errors=(ValueError, OSError))
