"""RGNetConfig: presets, validation, serialisation."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig, CLIPTextConfig

from configuration_rgnet import RGNET_PRESETS, RGNetConfig
from scripts.make_preset_configs import PRESET_FOLDERS

from .conftest import REPO_ROOT


@pytest.mark.parametrize("preset", sorted(RGNET_PRESETS))
def test_model_card_config_json_matches_the_preset(preset):
    """`model_cards/*/config.json` is generated from the presets (scripts/make_preset_configs.py)."""
    path = REPO_ROOT / "model_cards" / PRESET_FOLDERS[preset] / "config.json"
    stored = json.loads(path.read_text())
    expected = json.loads(RGNetConfig.from_preset(preset).to_json_string(use_diff=True))  # JSON keys are strings
    # The card folders are uploaded with the code files: the `auto_map` a saved `RGNetForVideoGrounding` writes
    # (test_hub_integration.py), for `AutoModel.from_pretrained(repo, trust_remote_code=True)`.
    expected["auto_map"] = {
        "AutoConfig": "configuration_rgnet.RGNetConfig",
        "AutoModel": "modeling_rgnet.RGNetForVideoGrounding",
    }
    for volatile in ("transformers_version",):
        stored.pop(volatile, None)
        expected.pop(volatile, None)
    assert stored == expected


@pytest.mark.parametrize("preset", sorted(RGNET_PRESETS))
def test_every_preset_key_is_a_config_field(preset):
    assert set(RGNET_PRESETS[preset]) <= set(RGNetConfig.__dataclass_fields__)


def test_published_recipe_values():
    mad = RGNetConfig.from_preset("mad")
    assert (mad.video_feature_dim, mad.max_window_frames, mad.window_stride, mad.max_text_tokens) == (
        512,
        900,
        450,
        25,
    )
    assert (mad.seconds_per_frame, mad.video_position_temperature, mad.retrieval_loss_weight) == (0.2, 100.0, 10.0)
    assert (mad.top_k_windows, mad.scale_matching_by_window_score, mad.pair_mode) == (30, False, "cross_pairs")
    pretrain = RGNetConfig.from_preset("ego4d_naq_pretrain")
    assert (pretrain.video_feature_dim, pretrain.max_window_frames, pretrain.window_stride) == (256, 90, 45)
    assert (pretrain.retrieval_loss_weight, pretrain.pair_mode, pretrain.seconds_per_frame) == (
        1.0,
        "cross_pairs",
        0.535,
    )
    finetune = RGNetConfig.from_preset("ego4d-finetune")
    assert (finetune.retrieval_loss_weight, finetune.pair_mode, finetune.negative_window_losses) == (
        0.0,
        "paired_negative",
        True,
    )
    assert (finetune.top_k_windows, finetune.scale_matching_by_window_score) == (20, True)


def test_preset_overrides_and_unknown_names():
    config = RGNetConfig.from_preset("mad", hidden_size=128, num_attention_heads=4)
    assert config.hidden_size == 128 and config.max_window_frames == 900
    with pytest.raises(ValueError, match="Unknown RGNet preset 'charades'.*ego4d-naq-pretrain"):
        RGNetConfig.from_preset("charades")
    with pytest.raises(ValueError, match="hiden_size"):
        RGNetConfig.from_preset("mad", hiden_size=3)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden_size": 30, "num_attention_heads": 8}, "divisible by `num_attention_heads`"),
        ({"hidden_size": 18, "num_attention_heads": 3}, "multiple of 4"),
        ({"max_window_frames": 10, "window_stride": 11}, "`window_stride`"),
        ({"max_window_frames": 10, "window_stride": 10}, "`window_stride`"),
        ({"selector_attention_mode": "sparse"}, "selector_attention_mode"),
        ({"pair_mode": "triplets"}, "pair_mode"),
        ({"query_normalization": "charades"}, "query_normalization"),
        ({"num_decoder_layers": 0}, "num_decoder_layers"),
        ({"dropout": 1.5}, "dropout"),
        ({"contrastive_temperature": 0.0}, "contrastive_temperature"),
        ({"retrieval_loss_weight": -1.0}, "retrieval_loss_weight"),
        ({"nms_threshold": 1.5}, "nms_threshold"),
        ({"text_config": {"model_type": "clip_text_model", "hidden_size": 64}}, "text_feature_dim"),
        # A whole CLIP config (text and vision towers, no `hidden_size`) instead of its `.text_config`.
        ({"text_config": {"model_type": "clip"}}, "`text_config` must configure a text encoder with a `hidden_size`"),
        ({"max_window_frames": 1}, "`max_window_frames` must be at least 2"),
        ({"layer_norm_eps": 0.0}, "`layer_norm_eps` must be positive"),
        ({"span_l1_loss_weight": float("nan")}, "`span_l1_loss_weight` must be a finite number"),
        ({"retrieval_loss_weight": float("inf")}, "`retrieval_loss_weight` must be a finite number"),
        ({"seconds_per_frame": float("inf")}, "`seconds_per_frame` must be a finite number"),
        ({"num_labels": 3}, "`num_labels` must be 2 \\(foreground, background\\)"),
        ({"id2label": {0: "moment"}}, "`num_labels` must be 2"),
        (
            {"matcher_span_l1_cost": 0.0, "matcher_giou_cost": 0, "matcher_class_cost": 0.0},
            "`matcher_span_l1_cost`, `matcher_giou_cost` and `matcher_class_cost` are all 0",
        ),
    ],
)
def test_invalid_fields_raise_value_error(fields, message):
    with pytest.raises(ValueError, match=message):
        RGNetConfig(**fields)


@pytest.mark.parametrize(
    "field, value",
    [
        ("use_auxiliary_loss", "False"),  # a string from a command line is not a bool
        ("scale_matching_by_window_score", 1),
        ("hidden_size", 1.5),
        ("dropout", "0.1"),
        ("layer_norm_eps", "tiny"),
        ("text_config", 5),
    ],
)
def test_field_types_are_checked_at_construction_and_assignment(field, value):
    with pytest.raises(StrictDataclassFieldValidationError, match=f"field '{field}'"):
        RGNetConfig(**{field: value})
    config = RGNetConfig()
    with pytest.raises(StrictDataclassFieldValidationError, match=f"field '{field}'"):
        setattr(config, field, value)


def test_fields_changed_after_construction_are_checked_when_saved(tmp_path):
    config = RGNetConfig()
    config.pair_mode = "bogus"
    with pytest.raises(StrictDataclassClassValidationError, match="Unknown `pair_mode` 'bogus'"):
        config.save_pretrained(tmp_path)
    config.pair_mode, config.window_stride = "cross_pairs", 200  # a stride past the window (90 frames)
    with pytest.raises(StrictDataclassClassValidationError, match="`window_stride` \\(200\\) must be smaller"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_from_preset_keeps_the_sentence_embedding_width_with_the_frame_features():
    config = RGNetConfig.from_preset("ego4d-nlq-finetune", video_feature_dim=512)
    assert config.pooled_text_dim == 512
    assert RGNetConfig.from_preset("mad", video_feature_dim=64, pooled_text_dim=64).pooled_text_dim == 64


def test_configs_saved_by_earlier_versions_load(tmp_path):
    """Booleans written as 0/1 (the training script once parsed values as JSON) and `architectures: null`."""
    fields = RGNetConfig().to_dict()
    fields.update(use_auxiliary_loss=0, scale_matching_by_window_score=1, architectures=None)
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = RGNetConfig.from_pretrained(tmp_path)
    assert config.use_auxiliary_loss is False and config.scale_matching_by_window_score is True
    assert config.architectures == ["RGNetForVideoGrounding"]


def test_from_pretrained_overrides_are_checked_against_the_other_fields(tmp_path):
    RGNetConfig(max_window_frames=12).save_pretrained(tmp_path)
    assert RGNetConfig.from_pretrained(tmp_path, window_stride=4).window_stride == 4
    with pytest.raises(ValueError, match="`window_stride` \\(99\\) must be smaller than `max_window_frames` \\(12\\)"):
        RGNetConfig.from_pretrained(tmp_path, window_stride=99)
    with pytest.raises(ValueError, match="`seconds_per_frame` must be a finite number"):
        RGNetConfig.from_pretrained(tmp_path, seconds_per_frame=float("inf"))
    # `None` means half a window, as at construction (of the saved window: a loaded config keeps its length).
    assert RGNetConfig.from_pretrained(tmp_path, window_stride=None).window_stride == 6


def test_the_two_classes_are_named(tmp_path):
    config = RGNetConfig()
    assert (config.id2label, config.label2id) == (
        {0: "foreground", 1: "background"},
        {"foreground": 0, "background": 1},
    )
    config.save_pretrained(tmp_path)
    assert RGNetConfig.from_pretrained(tmp_path).id2label == {0: "foreground", 1: "background"}
    named = RGNetConfig(id2label={0: "moment", 1: "no moment"})  # a user's own names are kept
    assert named.id2label == {0: "moment", 1: "no moment"}


def test_from_preset_names_a_missing_preset_name():
    with pytest.raises(TypeError, match="`name` must be a preset name"):
        RGNetConfig.from_preset(None)


def test_window_stride_defaults_to_half_a_window():
    assert RGNetConfig(max_window_frames=40).window_stride == 20
    assert RGNetConfig(max_window_frames=41, window_stride=10).window_stride == 10


def test_round_trip_through_save_pretrained_and_auto_config(tmp_path):
    text_config = CLIPTextConfig(hidden_size=512, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4)
    config = RGNetConfig.from_preset("ego4d-nlq-finetune", text_config=text_config)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, RGNetConfig)
    assert {**reloaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
    assert isinstance(reloaded.text_config, CLIPTextConfig) and reloaded.text_config.num_hidden_layers == 1


def test_config_module_alone_registers_the_config_and_saves_it_as_remote_code(tmp_path):
    # A process that imports only configuration_rgnet (no models): `AutoConfig` knows "rgnet", and a saved config
    # carries its code file and `auto_map`, as one saved with the model does. Importing the models next registers
    # them without a second registration of the config failing.
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = str(tmp_path / "config")
    script = textwrap.dedent(
        f"""
        import json, os, sys
        from transformers import AutoConfig, AutoModel
        from configuration_rgnet import RGNetConfig
        assert "modeling_rgnet" not in sys.modules
        assert type(AutoConfig.for_model("rgnet", hidden_size=64, num_attention_heads=4)) is RGNetConfig
        RGNetConfig.from_preset("mad").save_pretrained({folder!r})
        assert sorted(os.listdir({folder!r})) == ["config.json", "configuration_rgnet.py"], os.listdir({folder!r})
        auto_map = json.load(open(os.path.join({folder!r}, "config.json")))["auto_map"]
        assert auto_map == {{"AutoConfig": "configuration_rgnet.RGNetConfig"}}, auto_map
        import modeling_rgnet
        config = RGNetConfig(hidden_size=32, num_attention_heads=4, ffn_dim=64)
        assert type(AutoModel.from_config(config)) is modeling_rgnet.RGNetForVideoGrounding
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = checkout + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    # A clean interpreter outside the checkout loads it from the saved folder's code.
    script = textwrap.dedent(
        f"""
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained({folder!r}, trust_remote_code=True)
        assert type(config).__name__ == "RGNetConfig", type(config)
        assert type(config).__module__.startswith("transformers_modules"), type(config).__module__
        assert config.max_window_frames == 900
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"})
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
