"""Tests of `scripts/convert_original_rgnet_checkpoint.py` that need no fixtures of the original implementation.

An original-style checkpoint is built here from the layout spec §4 gives (key names and shapes, written out below
independently of the converter's key map), filled with distinct random values, and converted through the command
line. Where `shared/fixtures/original` exists, `tests/test_parity_original.py` checks that this layout is the one the
original code builds and converts the original's own tiny checkpoints.
"""

import json
import logging
from argparse import Namespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from configuration_rgnet import RGNetConfig
from modeling_rgnet import RGNetForVideoGrounding
from scripts import convert_original_rgnet_checkpoint as converter
from scripts.convert_original_rgnet_checkpoint import convert_original_state_dict


def official_layout(
    *,
    hidden: int,
    ffn: int,
    video_dim: int,
    text_dim: int,
    num_queries: int,
    num_encoder_layers: int,
    num_decoder_layers: int,
    text_positions: int,
) -> dict[str, tuple[int, ...]]:
    """Key → shape of the original model's state dict (spec §4), unused modules included."""
    linear = {"weight": (hidden, hidden), "bias": (hidden,)}
    norm = {"weight": (hidden,), "bias": (hidden,)}

    def module(prefix, shapes):
        return {f"{prefix}.{name}": shape for name, shape in shapes.items()}

    def linear_to(prefix, out_features, in_features):
        return module(prefix, {"weight": (out_features, in_features), "bias": (out_features,)})

    layout = {"global_rep_token": (hidden,), "global_rep_pos": (hidden,)}
    for stack in ("t2v_encoder", "encoder"):
        for i in range(num_encoder_layers):
            prefix = f"transformer.{stack}.layers.{i}"
            layout[f"{prefix}.self_attn.in_proj_weight"] = (3 * hidden, hidden)
            layout[f"{prefix}.self_attn.in_proj_bias"] = (3 * hidden,)
            layout |= module(f"{prefix}.self_attn.out_proj", linear)
            layout |= linear_to(f"{prefix}.linear1", ffn, hidden) | linear_to(f"{prefix}.linear2", hidden, ffn)
            layout |= module(f"{prefix}.norm1", norm) | module(f"{prefix}.norm2", norm)
    layout |= linear_to("transformer.prop_instance", 1, hidden)
    for i in range(num_decoder_layers):
        prefix = f"transformer.decoder.layers.{i}"
        for name in ("qcontent", "qpos", "kcontent", "kpos", "v"):
            layout |= module(f"{prefix}.sa_{name}_proj", linear)
        layout |= module(f"{prefix}.self_attn.out_proj", linear)
        for name in ("qcontent", "qpos", "kcontent", "kpos", "v", "qpos_sine"):
            layout |= module(f"{prefix}.ca_{name}_proj", linear)
        layout |= module(f"{prefix}.cross_attn.out_proj", linear)
        layout |= linear_to(f"{prefix}.linear1", ffn, hidden) | linear_to(f"{prefix}.linear2", hidden, ffn)
        for name in ("norm1", "norm2", "norm3"):
            layout |= module(f"{prefix}.{name}", norm)
    layout |= module("transformer.decoder.norm", norm)
    for head, out_features in (("query_scale", hidden), ("ref_point_head", hidden), ("ref_anchor_head", 1)):
        layout |= module(f"transformer.decoder.{head}.layers.0", linear)
        layout |= linear_to(f"transformer.decoder.{head}.layers.1", out_features, hidden)
    for prefix in [f"transformer.decoder.bbox_embed.{i}" for i in range(num_decoder_layers)] + ["span_embed"]:
        layout |= module(f"{prefix}.layers.0", linear) | module(f"{prefix}.layers.1", linear)
        layout |= linear_to(f"{prefix}.layers.2", 2, hidden)
    layout["txt_position_embed.position_embeddings.weight"] = (text_positions, hidden)
    layout |= module("txt_position_embed.LayerNorm", norm)
    layout |= linear_to("class_embed", 2, hidden)
    layout["query_embed.weight"] = (num_queries, 2)
    for modality, width in (("txt", text_dim), ("vid", video_dim)):
        layout |= module(f"input_{modality}_proj.0.LayerNorm", {"weight": (width,), "bias": (width,)})
        layout |= linear_to(f"input_{modality}_proj.0.net.1", hidden, width)
        layout |= module(f"input_{modality}_proj.1.LayerNorm", norm) | module(f"input_{modality}_proj.1.net.1", linear)
    layout |= linear_to("saliency_proj", 1, hidden)
    layout |= module("saliency_proj1", linear) | module("saliency_proj2", linear)
    layout |= linear_to("saliency_proj3", 1, hidden)
    return layout


FULL_SIZE_LAYOUTS = {  # preset: (layout sizes, parameter count spec §4 gives)
    "mad": (dict(video_dim=512, text_dim=512, text_positions=25), 18_498_590),
    "ego4d-nlq-finetune": (dict(video_dim=256, text_dim=512, text_positions=20), 18_431_262),
}


def full_size_layout(preset: str) -> dict[str, tuple[int, ...]]:
    sizes, _ = FULL_SIZE_LAYOUTS[preset]
    return official_layout(hidden=256, ffn=2048, num_queries=5, num_encoder_layers=2, num_decoder_layers=6, **sizes)


@pytest.mark.parametrize("preset", sorted(FULL_SIZE_LAYOUTS))
def test_full_size_original_layout_converts_to_the_preset_model(preset):
    """The official layout at the recipes' sizes has spec §4's parameter count and 354 entries; converted, it fills
    the preset's model exactly, less the three modules the original builds but never uses."""
    layout = full_size_layout(preset)
    _, original_count = FULL_SIZE_LAYOUTS[preset]
    assert len(layout) == 354
    assert sum(torch.Size(shape).numel() for shape in layout.values()) == original_count
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in layout.items()}
    config = RGNetConfig.from_preset(preset)
    converted, dropped = convert_original_state_dict(state_dict, config.num_decoder_layers)
    with torch.device("meta"):
        model = RGNetForVideoGrounding(config)
    assert {name: tuple(t.shape) for name, t in converted.items()} == {
        name: tuple(t.shape) for name, t in model.state_dict().items()
    }
    assert {key.split(".layers.")[0] for key in dropped} == {
        "saliency_proj.weight",
        "saliency_proj.bias",
        "txt_position_embed.position_embeddings.weight",
        "txt_position_embed.LayerNorm.weight",
        "txt_position_embed.LayerNorm.bias",
        "transformer.decoder.bbox_embed.5",
    }
    dropped_count = sum(state_dict[key].numel() for key in dropped)
    # saliency_proj 257, the text position table with its LayerNorm, the last anchor-update MLP 132,098.
    text_positions = FULL_SIZE_LAYOUTS[preset][0]["text_positions"]
    assert dropped_count == 257 + text_positions * 256 + 512 + 132_098
    assert model.num_parameters() == original_count - dropped_count


TINY = dict(hidden=32, ffn=64, video_dim=24, text_dim=16, num_queries=5, num_encoder_layers=2, num_decoder_layers=3)
TINY_OPTIONS = {  # the original's option names
    "dset_name": "mad",
    "hidden_dim": 32,
    "nheads": 4,
    "enc_layers": 2,
    "dec_layers": 3,
    "dim_feedforward": 64,
    "num_queries": 5,
    "v_motion_feat_dim": 24,
    "t_feat_dim": 16,
    "max_v_l": 40,
    "max_q_l": 8,
    "clip_length": 0.2,
    "pos_temperature": 100,
    "gumbel_eps": 0.3,
    "temperature": 0.07,
    "neg_loss": False,
}


@pytest.fixture(scope="module")
def tiny_original(tmp_path_factory):
    """A DDP-saved original-style checkpoint of distinct random values, converted through the command line."""
    generator = torch.Generator().manual_seed(0)
    layout = official_layout(**TINY, text_positions=8)
    state_dict = {key: torch.randn(shape, generator=generator) for key, shape in layout.items()}
    folder = tmp_path_factory.mktemp("conversion")
    payload = {
        "model": {f"module.{key}": value for key, value in state_dict.items()},
        "opt": Namespace(**TINY_OPTIONS),
    }
    torch.save(payload, folder / "model_best.ckpt")
    converter.main(["--checkpoint", str(folder / "model_best.ckpt"), "--output_dir", str(folder / "converted")])
    model = RGNetForVideoGrounding.from_pretrained(folder / "converted").eval()
    return state_dict, model


def test_conversion_reads_sizes_and_recipe_off_the_options(tiny_original):
    _, model = tiny_original
    config = model.config
    assert (config.hidden_size, config.num_attention_heads, config.ffn_dim) == (32, 4, 64)
    assert (config.video_feature_dim, config.text_feature_dim, config.num_moment_queries) == (24, 16, 5)
    assert (config.num_text_to_video_layers, config.num_encoder_layers, config.num_decoder_layers) == (2, 2, 3)
    assert (config.max_window_frames, config.max_text_tokens, config.seconds_per_frame) == (40, 8, 0.2)
    assert config.selector_temperature == 0.3 and config.contrastive_temperature == 0.07
    assert config.pair_mode == "cross_pairs"  # `neg_loss=False`


# One entry per row of spec §4's table: this package's parameter ← the original's tensor (or rows of it).
SPEC_ROWS = {
    "model.text_projection.blocks.0.norm.weight": "input_txt_proj.0.LayerNorm.weight",
    "model.text_projection.blocks.1.dense.weight": "input_txt_proj.1.net.1.weight",
    "model.video_projection.blocks.0.dense.bias": "input_vid_proj.0.net.1.bias",
    "model.global_token": "global_rep_token",
    "model.global_position": "global_rep_pos",
    "model.text_to_video.layers.1.attn.out_proj.weight": "transformer.t2v_encoder.layers.1.self_attn.out_proj.weight",
    "model.text_to_video.layers.0.ffn.fc1.weight": "transformer.t2v_encoder.layers.0.linear1.weight",
    "model.text_to_video.layers.0.ffn.fc2.bias": "transformer.t2v_encoder.layers.0.linear2.bias",
    "model.text_to_video.layers.0.attn_norm.weight": "transformer.t2v_encoder.layers.0.norm1.weight",
    "model.text_to_video.layers.0.ffn_norm.bias": "transformer.t2v_encoder.layers.0.norm2.bias",
    "model.encoder.layers.1.ffn.fc1.bias": "transformer.encoder.layers.1.linear1.bias",
    "model.encoder.layers.1.attn_norm.bias": "transformer.encoder.layers.1.norm1.bias",
    "model.frame_selector.dense.weight": "transformer.prop_instance.weight",
    "model.decoder.layers.2.self_attn.q_content.weight": "transformer.decoder.layers.2.sa_qcontent_proj.weight",
    "model.decoder.layers.2.self_attn.k_pos.bias": "transformer.decoder.layers.2.sa_kpos_proj.bias",
    "model.decoder.layers.1.self_attn.v.weight": "transformer.decoder.layers.1.sa_v_proj.weight",
    "model.decoder.layers.1.self_attn.out_proj.weight": "transformer.decoder.layers.1.self_attn.out_proj.weight",
    "model.decoder.layers.0.cross_attn.q_pos.weight": "transformer.decoder.layers.0.ca_qpos_proj.weight",
    "model.decoder.layers.0.cross_attn.k_content.bias": "transformer.decoder.layers.0.ca_kcontent_proj.bias",
    "model.decoder.layers.0.cross_attn.q_sine.weight": "transformer.decoder.layers.0.ca_qpos_sine_proj.weight",
    "model.decoder.layers.0.cross_attn.out_proj.bias": "transformer.decoder.layers.0.cross_attn.out_proj.bias",
    "model.decoder.layers.1.self_attn.norm.weight": "transformer.decoder.layers.1.norm1.weight",
    "model.decoder.layers.1.cross_attn.norm.weight": "transformer.decoder.layers.1.norm2.weight",
    "model.decoder.layers.1.ffn.norm.weight": "transformer.decoder.layers.1.norm3.weight",
    "model.decoder.layers.2.ffn.ffn.fc1.weight": "transformer.decoder.layers.2.linear1.weight",
    "model.decoder.query_scale.layers.1.weight": "transformer.decoder.query_scale.layers.1.weight",
    "model.decoder.anchor_position_head.layers.0.bias": "transformer.decoder.ref_point_head.layers.0.bias",
    "model.decoder.width_modulation_head.layers.1.weight": "transformer.decoder.ref_anchor_head.layers.1.weight",
    "model.decoder.anchor_update_heads.1.layers.2.weight": "transformer.decoder.bbox_embed.1.layers.2.weight",
    "model.decoder.layernorm.weight": "transformer.decoder.norm.weight",
    "model.anchor_embeddings": "query_embed.weight",
    "class_head.weight": "class_embed.weight",
    "span_head.layers.2.bias": "span_embed.layers.2.bias",
    "saliency_frame_proj.weight": "saliency_proj1.weight",
    "saliency_global_proj.bias": "saliency_proj2.bias",
    "retrieval_head.weight": "saliency_proj3.weight",
}


def test_every_table_row_lands_on_its_module(tiny_original):
    state_dict, model = tiny_original
    ours = model.state_dict()
    for name, original in SPEC_ROWS.items():
        assert torch.equal(ours[name], state_dict[original]), f"{name} ← {original}"
    # Packed projections: rows 0..D-1 project queries, D..2D-1 keys, 2D..3D-1 values.
    hidden = TINY["hidden"]
    for stack, original in (("text_to_video", "t2v_encoder"), ("encoder", "encoder")):
        for i in range(TINY["num_encoder_layers"]):
            packed = f"transformer.{original}.layers.{i}.self_attn.in_proj_"
            for row, projection in enumerate("qkv"):
                rows = slice(row * hidden, (row + 1) * hidden)
                attention = f"model.{stack}.layers.{i}.attn.{projection}_proj."
                assert torch.equal(ours[attention + "weight"], state_dict[packed + "weight"][rows])
                assert torch.equal(ours[attention + "bias"], state_dict[packed + "bias"][rows])


def test_every_used_original_tensor_is_taken_once_and_only_the_unused_are_dropped(tiny_original):
    """Values are distinct, so each of the model's tensors names its source: together they take every original
    tensor (each packed projection as three blocks of rows) once, except the unused modules."""
    state_dict, model = tiny_original
    hidden = TINY["hidden"]
    sources = {}
    for key, tensor in state_dict.items():
        if ".in_proj_" in key:
            for row, block in enumerate(tensor.split(hidden)):
                sources[block.numpy().tobytes()] = f"{key}[{row}]"
        else:
            sources[tensor.numpy().tobytes()] = key
    assert len(sources) == len(state_dict) + 2 * 2 * TINY["num_encoder_layers"] * 2  # all distinct
    taken = [sources.get(tensor.numpy().tobytes(), name) for name, tensor in model.state_dict().items()]
    assert len(taken) == len(set(taken))
    untaken = set(sources.values()) - set(taken)
    assert untaken == {
        key
        for key in state_dict
        if key.startswith(("saliency_proj.", "txt_position_embed.", "transformer.decoder.bbox_embed.2."))
    }
    assert set(taken) <= set(sources.values())  # no parameter left at its initial value


def test_split_projections_attend_as_the_original_packed_attention(tiny_original):
    """The original's encoder layers attend through `nn.MultiheadAttention` with one packed `in_proj`; the converted
    layer gives the same output for the same inputs."""
    state_dict, model = tiny_original
    prefix = "transformer.t2v_encoder.layers.1.self_attn."
    packed = nn.MultiheadAttention(TINY["hidden"], TINY_OPTIONS["nheads"], batch_first=True).eval()
    packed.load_state_dict(
        {name: state_dict[prefix + name] for name in ("in_proj_weight", "in_proj_bias")}
        | {f"out_proj.{name}": state_dict[f"{prefix}out_proj.{name}"] for name in ("weight", "bias")}
    )
    generator = torch.Generator().manual_seed(1)
    query, memory = torch.randn(2, 7, 32, generator=generator), torch.randn(2, 11, 32, generator=generator)
    with torch.no_grad():
        expected = packed(query, memory, memory, need_weights=False)[0]
        ours = model.model.text_to_video.layers[1].attn(query, memory, memory)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_converted_model_grounds_and_the_dropped_keys_are_reported(tiny_original, tmp_path, caplog):
    state_dict, model = tiny_original
    generator = torch.Generator().manual_seed(2)
    inputs = {
        "video_features": torch.randn(3, 40, 24, generator=generator),
        "video_mask": torch.ones(3, 40),
        "text_features": torch.randn(3, 8, 16, generator=generator),
        "text_mask": torch.ones(3, 8),
    }
    with torch.no_grad():
        outputs = model(**inputs)
    assert outputs.pred_spans.shape == (3, 5, 2) and outputs.window_logits.shape == (3, 1)
    assert all(torch.isfinite(value).all() for value in (outputs.logits, outputs.pred_spans, outputs.window_logits))
    # A bare state dict with a separate options file converts to the same weights, logging what it drops.
    save_file(state_dict, tmp_path / "weights.safetensors")
    (tmp_path / "options.json").write_text(json.dumps(TINY_OPTIONS))
    with caplog.at_level(logging.INFO, logger="convert_original_rgnet_checkpoint"):
        converter.main(
            [
                "--checkpoint",
                str(tmp_path / "weights.safetensors"),
                "--original_options",
                str(tmp_path / "options.json"),
            ]
            + ["--output_dir", str(tmp_path / "converted")]
        )
    assert (
        "Dropped 11 unused original keys" in caplog.text and "transformer.decoder.bbox_embed.2.layers.0" in caplog.text
    )
    again = RGNetForVideoGrounding.from_pretrained(tmp_path / "converted")
    assert all(torch.equal(again.state_dict()[name], value) for name, value in model.state_dict().items())
