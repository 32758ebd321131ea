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
    for key, tensor in state_dict.items():
        key = key.removeprefix("module.")
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


def _options_to_dict(options) -> dict:
    if isinstance(options, Namespace):
        return vars(options)
    if isinstance(options, dict):
        return dict(options)
    raise ValueError(f"`opt` must be an argparse Namespace or a dict; got {type(options).__name__}.")


def config_from_original(options: dict, state_dict: dict[str, torch.Tensor]) -> RGNetConfig:
    """Build the `RGNetConfig` of an original model from its training options and state dict.

    Widths and depths are read off the weights (they cannot disagree with them); attention heads, temperatures,
    loss weights and windowing come from the options. The inference defaults follow the dataset's preset.
    """
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
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
    if "nheads" not in options:
        raise ValueError("The original options must give `nheads` (attention heads); it cannot be read off weights.")

    def count(pattern: str) -> int:
        return len({match[1] for key in state_dict if (match := re.match(pattern, key))})

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
    hidden = state_dict["global_rep_token"].shape[0]
    fields = {
        "video_feature_dim": state_dict["input_vid_proj.0.LayerNorm.weight"].shape[0],
        "text_feature_dim": state_dict["input_txt_proj.0.LayerNorm.weight"].shape[0],
        "hidden_size": hidden,
        "num_attention_heads": int(options["nheads"]),
        "num_text_to_video_layers": count(r"transformer\.t2v_encoder\.layers\.(\d+)\."),
        "num_encoder_layers": count(r"transformer\.encoder\.layers\.(\d+)\."),
        "num_decoder_layers": count(r"transformer\.decoder\.layers\.(\d+)\."),
        "ffn_dim": state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0],
        "num_moment_queries": state_dict["query_embed.weight"].shape[0],
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
    return state_dict, _options_to_dict(options)


def convert(checkpoint, output_dir, original_options=None, safe_serialization=True) -> RGNetForVideoGrounding:
    """Convert `checkpoint` and save it to `output_dir` with a feature-only processor (the config's windowing and
    inference settings; `AutoProcessor`, evaluation and grounding read it); returns the loaded model."""
    state_dict, options = load_original_checkpoint(checkpoint, original_options)
    config = config_from_original(options, state_dict)
    converted, dropped = convert_original_state_dict(state_dict, config.num_decoder_layers)
    model = RGNetForVideoGrounding(config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
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
