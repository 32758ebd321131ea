"""Numerical parity with the original RGNet implementation (fixtures in `shared/fixtures/original`).

The fixtures hold the original's weights, inputs and outputs for two tiny models (MAD and Ego4D recipes). The
weights are converted with `scripts/convert_original_rgnet_checkpoint.py` and every model output, loss term
and gradient is compared at the tolerances the fixtures' README gives.
"""

import json
import re
from argparse import Namespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor

from modeling_rgnet import RGNetForVideoGrounding
from processing_rgnet import RGNetProcessor
from scripts import convert_original_rgnet_checkpoint as converter
from scripts.convert_original_rgnet_checkpoint import config_from_original, convert_original_state_dict

from .conftest import FIXTURE_TO_CONFIG_FIELD
from .test_convert_original_checkpoint import full_size_layout

FIXTURE_NAMES = ["rgnet_tiny_mad", "rgnet_tiny_ego4d"]
OUTPUT_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
HIDDEN_TOLERANCE = {"atol": 5e-5, "rtol": 0}
LOSS_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


class Fixture:
    """One tiny original model: metadata, weights, inputs and reference outputs."""

    def __init__(self, folder, name):
        self.name = name
        self.meta = json.loads((folder / f"{name}.json").read_text())
        self.official_state_dict = load_file(folder / f"{name}.official_state_dict.safetensors")
        self.inputs = load_file(folder / f"{name}.inputs.safetensors")
        self.outputs = load_file(folder / f"{name}.outputs.safetensors")
        self.train_mode = load_file(folder / f"{name}.train_mode.safetensors")

    def config(self, batch_mode="cross_pairs", **overrides):
        flags = self.meta["official_flags"]["architecture"]
        config = config_from_original(flags, self.official_state_dict)
        loss_section = self.meta["spec_config"][f"loss_{batch_mode}"]
        loss_fields = {
            FIXTURE_TO_CONFIG_FIELD[key]: value
            for key, value in loss_section.items()
            if key in FIXTURE_TO_CONFIG_FIELD
        }
        for field, value in {**loss_fields, **overrides}.items():
            setattr(config, field, value)
        return config

    def model(self, batch_mode="cross_pairs", **overrides):
        config = self.config(batch_mode, **overrides)
        converted, _ = convert_original_state_dict(self.official_state_dict, config.num_decoder_layers)
        model = RGNetForVideoGrounding(config)
        missing, unexpected = model.load_state_dict(converted, strict=False)
        assert not missing and not unexpected
        return model

    def labels(self, batch_mode):
        return {
            "batch_mode": batch_mode,
            "spans": self.inputs["targets.spans"],
            "saliency_positive_frames": self.inputs["targets.saliency_pos_labels"],
            "saliency_negative_frames": self.inputs["targets.saliency_neg_labels"],
        }

    def paired_batch(self):
        """Positives then negatives of the same queries in one batch of 2B pairs (rows B + b = negatives)."""
        inputs = self.inputs
        return {
            "video_features": torch.cat([inputs["positives.video_features"], inputs["negatives.video_features"]]),
            "video_mask": torch.cat([inputs["positives.video_mask"], inputs["negatives.video_mask"]]),
            "text_features": inputs["queries.text_features"].repeat(2, 1, 1),
            "text_mask": inputs["queries.text_mask"].repeat(2, 1),
        }

    def batch(self, prefix):
        return {
            key: self.inputs[f"{prefix}.{key}"]
            for key in ("video_features", "video_mask", "text_features", "text_mask")
        }


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def fixture(request, original_fixtures_dir):
    return Fixture(original_fixtures_dir, request.param)


def assert_close(actual, expected, mask=None, name="", **tolerance):
    if mask is not None:
        actual, expected = actual[mask.bool()], expected[mask.bool()]
    torch.testing.assert_close(actual, expected.to(actual.dtype), msg=lambda m: f"{name}: {m}", **tolerance)


def compare_predictions(outputs, reference, prefix, video_mask=None):
    """Compare every prediction of one forward with the fixture group `prefix`."""
    assert_close(outputs.logits, reference[f"{prefix}.logits"], name="logits", **OUTPUT_TOLERANCE)
    assert_close(outputs.pred_spans, reference[f"{prefix}.pred_spans"], name="pred_spans", **OUTPUT_TOLERANCE)
    aux_logits = torch.stack([aux["logits"] for aux in outputs.auxiliary_outputs])
    aux_spans = torch.stack([aux["pred_spans"] for aux in outputs.auxiliary_outputs])
    assert_close(aux_logits, reference[f"{prefix}.aux_logits"], name="aux_logits", **OUTPUT_TOLERANCE)
    assert_close(aux_spans, reference[f"{prefix}.aux_pred_spans"], name="aux_pred_spans", **OUTPUT_TOLERANCE)
    assert_close(outputs.window_logits, reference[f"{prefix}.window_logits"], name="window_logits", **OUTPUT_TOLERANCE)
    assert_close(
        outputs.saliency_scores, reference[f"{prefix}.saliency_scores"], video_mask, "saliency", **OUTPUT_TOLERANCE
    )
    assert_close(outputs.reference_anchors, reference[f"{prefix}.references"], name="references", **OUTPUT_TOLERANCE)
    torch.testing.assert_close(outputs.frame_selection, reference[f"{prefix}.frame_selection"], atol=0, rtol=0)
    if f"{prefix}.selector_logits" in reference:  # the isolated runs store no selector logits
        torch.testing.assert_close(outputs.selector_logits, reference[f"{prefix}.selector_logits"], **OUTPUT_TOLERANCE)
    if f"{prefix}.global_hidden_state" in reference:
        assert_close(
            outputs.global_hidden_state, reference[f"{prefix}.global_hidden_state"], name="global", **HIDDEN_TOLERANCE
        )


# ---- eval mode ----


def test_isolated_pairs_match_original(fixture):
    model = fixture.model().eval()
    inputs = fixture.batch("pairs")
    for index in range(inputs["video_mask"].shape[0]):
        num_frames = int(inputs["video_mask"][index].sum())
        num_tokens = int(inputs["text_mask"][index].sum())
        with torch.no_grad():
            outputs = model(
                video_features=inputs["video_features"][index : index + 1, :num_frames],
                video_mask=inputs["video_mask"][index : index + 1, :num_frames],
                text_features=inputs["text_features"][index : index + 1, :num_tokens],
                text_mask=inputs["text_mask"][index : index + 1, :num_tokens],
            )
        compare_predictions(outputs, fixture.outputs, f"isolated.{index}")


def test_pairs_batch_matches_original_where_free_of_the_mask_quirk(fixture):
    """Without emulation, pairs that the original's head-ordering quirk leaves alone match; the others equal
    their isolated run (our outputs do not depend on the rest of the batch)."""
    model = fixture.model().eval()
    inputs = fixture.batch("pairs")
    with torch.no_grad():
        outputs = model(**inputs)
    affected = fixture.meta["pairs"]["t2v_mask_ordering"]["valid_outputs_affected"]
    clean = torch.tensor([not flag for flag in affected])
    assert clean.any() and not clean.all()
    mask = inputs["video_mask"][clean]
    assert_close(outputs.logits[clean], fixture.outputs["pairs.logits"][clean], name="logits", **OUTPUT_TOLERANCE)
    assert_close(outputs.pred_spans[clean], fixture.outputs["pairs.pred_spans"][clean], **OUTPUT_TOLERANCE)
    assert_close(outputs.window_logits[clean], fixture.outputs["pairs.window_logits"][clean], **OUTPUT_TOLERANCE)
    assert_close(
        outputs.saliency_scores[clean], fixture.outputs["pairs.saliency_scores"][clean], mask, **OUTPUT_TOLERANCE
    )
    for index in torch.nonzero(~clean).flatten().tolist():
        assert_close(outputs.logits[index], fixture.outputs[f"isolated.{index}.logits"][0], **OUTPUT_TOLERANCE)
        assert_close(
            outputs.window_logits[index], fixture.outputs[f"isolated.{index}.window_logits"][0], **OUTPUT_TOLERANCE
        )


def test_pairs_batch_matches_original_exactly_with_quirk_emulation(fixture):
    model = fixture.model(emulate_text_mask_head_ordering=True).eval()
    inputs = fixture.batch("pairs")
    with torch.no_grad():
        outputs = model(**inputs)
    compare_predictions(outputs, fixture.outputs, "pairs")  # every position, padded ones included
    reference = fixture.outputs
    assert_close(
        outputs.encoder_last_hidden_state,
        reference["pairs.encoder_last_hidden_state"],
        name="memory",
        **HIDDEN_TOLERANCE,
    )
    assert_close(
        outputs.decoder_hidden_states, reference["pairs.decoder_hidden_states"], name="decoder", **HIDDEN_TOLERANCE
    )


@pytest.mark.parametrize("prefix", ["cross"])
def test_cross_pairs_batch_matches_original(fixture, prefix):
    model = fixture.model().eval()
    inputs = fixture.batch(prefix)
    with torch.no_grad():
        outputs = model(**inputs)
    compare_predictions(outputs, fixture.outputs, prefix, video_mask=inputs["video_mask"])


def test_paired_negative_forwards_match_original(fixture):
    model = fixture.model("paired_negative").eval()
    batch = fixture.paired_batch()
    with torch.no_grad():
        outputs = model(**batch)
    num_queries = fixture.inputs["queries.text_mask"].shape[0]
    positives, negatives = slice(0, num_queries), slice(num_queries, 2 * num_queries)
    for rows, prefix in ((positives, "paired_pos"), (negatives, "paired_neg")):
        assert_close(outputs.logits[rows], fixture.outputs[f"{prefix}.logits"], **OUTPUT_TOLERANCE)
        assert_close(outputs.pred_spans[rows], fixture.outputs[f"{prefix}.pred_spans"], **OUTPUT_TOLERANCE)
        assert_close(outputs.window_logits[rows], fixture.outputs[f"{prefix}.window_logits"], **OUTPUT_TOLERANCE)
        assert_close(outputs.reference_anchors[:, rows], fixture.outputs[f"{prefix}.references"], **OUTPUT_TOLERANCE)
        torch.testing.assert_close(
            outputs.frame_selection[rows], fixture.outputs[f"{prefix}.frame_selection"], atol=0, rtol=0
        )
    # Every position of the negative windows, padded ones included: the loss reads them all.
    assert_close(outputs.saliency_scores[negatives], fixture.outputs["paired_neg.saliency_scores"], **OUTPUT_TOLERANCE)


# ---- losses ----


def check_loss_terms(loss, loss_dict, reference, prefix, matched_slots=None):
    for key, value in reference.items():
        if not key.startswith(f"{prefix}.loss."):
            continue
        term = key[len(f"{prefix}.loss.") :]
        if term == "total":
            torch.testing.assert_close(loss.detach().reshape(1), value, atol=5e-5, rtol=0)
        else:
            assert term in loss_dict, f"missing loss term {term}"
            assert_close(loss_dict[term].detach().reshape(1), value, name=term, **LOSS_TOLERANCE)
    if matched_slots is not None:
        torch.testing.assert_close(matched_slots, reference[f"{prefix}.matched_slots"], atol=0, rtol=0)


def test_cross_pairs_loss_terms_match_original(fixture):
    model = fixture.model("cross_pairs").eval()
    labels = fixture.labels("cross_pairs")
    with torch.no_grad():
        outputs = model(**fixture.batch("cross"), labels=labels)
    slots = model.criterion.matched_slots(outputs, labels)
    check_loss_terms(outputs.loss, outputs.loss_dict, fixture.outputs, "cross", slots)


def test_paired_negative_loss_terms_match_original(fixture):
    model = fixture.model("paired_negative").eval()
    labels = fixture.labels("paired_negative")
    with torch.no_grad():
        outputs = model(**fixture.paired_batch(), labels=labels)
    slots = model.criterion.matched_slots(outputs, labels)
    check_loss_terms(outputs.loss, outputs.loss_dict, fixture.outputs, "paired", slots)


# ---- training mode: dropout off, the gate's uniform samples injected ----


def official_gradients(model, fixture, num_decoder_layers):
    """Gradients of our parameters re-keyed by the converter so they compare with `grad.<official key>`."""
    ours = {name: param.grad for name, param in model.named_parameters() if param.grad is not None}
    expected = {key[len("grad.") :]: value for key, value in fixture.train_mode.items() if key.startswith("grad.")}
    converted, _ = convert_original_state_dict(expected, num_decoder_layers)
    return ours, converted


def test_training_step_matches_original_losses_and_gradients(fixture):
    train = fixture.train_mode
    mode = fixture.meta["train_mode"]["mode"]
    if mode == "cross":
        batch_mode, batch, prefix, noise = (
            "cross_pairs",
            fixture.batch("cross"),
            "train_cross",
            train["cross.gate_uniform"],
        )
        groups = [("cross", slice(None))]
    else:
        batch_mode, batch, prefix = "paired_negative", fixture.paired_batch(), "train_paired"
        noise = torch.cat([train["paired_pos.gate_uniform"], train["paired_neg.gate_uniform"]])
        half = noise.shape[0] // 2
        groups = [("paired_pos", slice(0, half)), ("paired_neg", slice(half, None))]
    model = fixture.model(batch_mode, dropout=0.0, input_dropout=0.0).train()
    labels = fixture.labels(batch_mode)
    outputs = model(**batch, labels=labels, selector_noise=noise)
    for group, rows in groups:
        assert_close(outputs.logits[rows], train[f"{group}.logits"], name=f"{group} logits", **OUTPUT_TOLERANCE)
        assert_close(outputs.pred_spans[rows], train[f"{group}.pred_spans"], **OUTPUT_TOLERANCE)
        assert_close(outputs.window_logits[rows], train[f"{group}.window_logits"], **OUTPUT_TOLERANCE)
        # Padded positions of the cross batch may carry the original's mask quirk: compare valid frames.
        valid = batch["video_mask"][rows]
        assert_close(outputs.selector_logits[rows], train[f"{group}.selector_logits"], valid, **OUTPUT_TOLERANCE)
        assert_close(outputs.frame_selection[rows].detach(), train[f"{group}.frame_selection"], valid, atol=0, rtol=0)
    check_loss_terms(outputs.loss, outputs.loss_dict, train, prefix, model.criterion.matched_slots(outputs, labels))

    outputs.loss.backward()
    ours, expected = official_gradients(model, fixture, model.config.num_decoder_layers)
    without_grad = set(fixture.meta["train_mode"]["params_without_grad"])
    assert set(ours) == set(expected), (set(ours) ^ set(expected), without_grad)
    for name, grad in expected.items():
        torch.testing.assert_close(ours[name], grad, atol=2e-4, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


# ---- conversion ----


def test_conversion_cli_round_trip(fixture, tmp_path):
    checkpoint = tmp_path / "original.ckpt"
    flags = fixture.meta["official_flags"]["architecture"]
    torch.save({"model": fixture.official_state_dict, "opt": Namespace(**flags)}, checkpoint)
    converter.main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "converted")])
    model = RGNetForVideoGrounding.from_pretrained(tmp_path / "converted").eval()
    assert model.config.video_position_temperature == flags["pos_temperature"]
    # With its processor: the folder loads through AutoProcessor, as evaluation and grounding read it.
    processor = AutoProcessor.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    assert isinstance(processor, RGNetProcessor) and processor.tokenizer is None
    expected = RGNetProcessor.from_config(model.config)
    assert all(getattr(processor, name) == getattr(expected, name) for name in RGNetProcessor.SETTINGS)
    assert model.config.retrieval_loss_weight == flags["retrieval_loss_coef"]
    reference = fixture.model().eval()
    with torch.no_grad():
        ours, theirs = model(**fixture.batch("cross")), reference(**fixture.batch("cross"))
    torch.testing.assert_close(ours.logits, theirs.logits, atol=0, rtol=0)


def test_conversion_cli_with_separate_options_file(fixture, tmp_path):
    from safetensors.torch import save_file

    save_file(fixture.official_state_dict, tmp_path / "weights.safetensors")
    (tmp_path / "options.json").write_text(json.dumps(fixture.meta["official_flags"]["architecture"]))
    converter.main(
        [
            "--checkpoint",
            str(tmp_path / "weights.safetensors"),
            "--original_options",
            str(tmp_path / "options.json"),
            "--output_dir",
            str(tmp_path / "converted"),
        ]
    )
    assert (tmp_path / "converted" / "model.safetensors").is_file()


def test_conversion_reads_the_recipe_off_the_options(fixture, tmp_path):
    """The NaQ pretraining options (no negative-window loss) give cross pairs, NLQ finetuning paired negatives;
    options that name no dataset, a usage error; a file that is not a checkpoint or not JSON, one naming the flag."""
    flags = dict(fixture.meta["official_flags"]["architecture"])
    for neg_loss, pair_mode in ((False, "cross_pairs"), (True, "paired_negative")):
        config = converter.config_from_original({**flags, "neg_loss": neg_loss}, fixture.official_state_dict)
        assert config.pair_mode == pair_mode
    unnamed = {key: value for key, value in flags.items() if key not in ("dset_name", "clip_length")}
    with pytest.raises(ValueError, match="neither `dset_name` nor `clip_length`"):
        converter.config_from_original(unnamed, fixture.official_state_dict)
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="`--checkpoint` .* is not a readable PyTorch checkpoint"):
        converter.main(["--checkpoint", str(tmp_path / "junk.ckpt"), "--output_dir", str(tmp_path / "out")])
    torch.save({"model": fixture.official_state_dict}, tmp_path / "x.ckpt")
    (tmp_path / "options.json").write_text("{nheads: 4")
    with pytest.raises(ValueError, match="`--original_options` file .* is not valid JSON"):
        converter.main(
            ["--checkpoint", str(tmp_path / "x.ckpt"), "--original_options", str(tmp_path / "options.json")]
            + ["--output_dir", str(tmp_path / "out")]
        )


def test_conversion_rejects_unexpected_keys(fixture):
    state_dict = dict(fixture.official_state_dict)
    state_dict["transformer.mystery.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="transformer.mystery.weight"):
        convert_original_state_dict(state_dict, 6)


def test_conversion_fails_on_missing_keys(fixture, tmp_path):
    state_dict = {k: v for k, v in fixture.official_state_dict.items() if not k.startswith("class_embed")}
    torch.save({"model": state_dict, "opt": fixture.meta["official_flags"]["architecture"]}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match=re.escape("lacks 2 key(s) the model needs: ['class_embed.weight'")):
        converter.main(["--checkpoint", str(tmp_path / "x.ckpt"), "--output_dir", str(tmp_path / "out")])


def convert_checkpoint(tmp_path, state_dict, flags):
    """Save an original-style checkpoint (weights and options) and run the converter's command line on it."""
    torch.save({"model": state_dict, "opt": Namespace(**flags)}, tmp_path / "original.ckpt")
    converter.main(["--checkpoint", str(tmp_path / "original.ckpt"), "--output_dir", str(tmp_path / "converted")])


SIZE_KEYS = {  # an original key the converter could read a size off, and the option that gives it
    "global_rep_token": "hidden_dim",
    "input_vid_proj.0.LayerNorm.weight": "v_motion_feat_dim",
    "input_txt_proj.0.LayerNorm.weight": "t_feat_dim",
    "transformer.encoder.layers.0.linear1.weight": "dim_feedforward",
    "query_embed.weight": "num_queries",
}


@pytest.mark.parametrize("key", sorted(SIZE_KEYS))
def test_conversion_names_a_missing_key_the_sizes_could_be_read_off(fixture, tmp_path, key):
    """Such a checkpoint once failed with a bare `KeyError` before any key check: now the sizes come from the
    options and the key is named like any other missing key, or, where the options lack the size too, named as the
    key the size cannot be read off."""
    flags = fixture.meta["official_flags"]["architecture"]
    state_dict = {name: value for name, value in fixture.official_state_dict.items() if name != key}
    with pytest.raises(ValueError, match=re.escape(f"lacks 1 key(s) the model needs: ['{key}']")):
        convert_checkpoint(tmp_path, state_dict, flags)
    assert not (tmp_path / "converted").exists()
    without_size = {name: value for name, value in flags.items() if name != SIZE_KEYS[key]}
    with pytest.raises(
        ValueError, match=re.escape(f"no `{SIZE_KEYS[key]}` and the checkpoint lacks the original key `{key}`")
    ):
        config_from_original(without_size, state_dict)


def test_conversion_takes_the_depths_from_the_options(fixture, tmp_path):
    """A checkpoint without its last text-to-video layer once converted silently into a shallower model (depths were
    counted off the weights): the options' `enc_layers` and `dec_layers` give the depths and each key of a missing
    layer is named; weights deeper than the options name the extra layer's keys."""
    flags = fixture.meta["official_flags"]["architecture"]
    official = fixture.official_state_dict
    without_layer = {
        name: value for name, value in official.items() if not name.startswith("transformer.t2v_encoder.layers.1.")
    }
    with pytest.raises(ValueError, match=re.escape("lacks 12 key(s) the model needs")) as error:
        convert_checkpoint(tmp_path, without_layer, flags)
    layer_keys = sorted(name for name in official if name.startswith("transformer.t2v_encoder.layers.1."))
    assert len(layer_keys) == 12 and all(f"'{name}'" in str(error.value) for name in layer_keys)
    assert "2 text-to-video" in str(error.value)  # the depth the options give
    with pytest.raises(ValueError, match=r"has 42 key\(s\) the model has no place for") as error:
        convert_checkpoint(tmp_path, official, {**flags, "dec_layers": 5})  # the 6th layer and its anchor head
    assert "'transformer.decoder.layers.5.sa_qcontent_proj.weight'" in str(error.value)
    # Options that leave the depths out: they are read off the weights, by the highest layer index, so that a
    # missing middle layer is named too.
    no_depths = {name: value for name, value in flags.items() if name not in ("enc_layers", "dec_layers")}
    config = config_from_original(no_depths, official)
    assert (config.num_text_to_video_layers, config.num_encoder_layers, config.num_decoder_layers) == (2, 2, 6)
    without_middle = {
        name: value for name, value in official.items() if not name.startswith("transformer.decoder.layers.3.")
    }
    with pytest.raises(ValueError, match=re.escape("'transformer.decoder.layers.3.sa_qcontent_proj.weight'")):
        convert_checkpoint(tmp_path, without_middle, no_depths)


def test_conversion_names_a_wrongly_shaped_tensor_with_both_shapes(fixture, tmp_path):
    """A tensor of another shape once ended in `load_state_dict`'s RuntimeError, in this package's key names."""
    state_dict = dict(fixture.official_state_dict)
    state_dict["class_embed.weight"] = torch.zeros(3, 32)
    packed = "transformer.t2v_encoder.layers.0.self_attn.in_proj_weight"
    state_dict[packed] = state_dict[packed][:-1]  # rows no longer split into q, k and v
    with pytest.raises(ValueError, match=re.escape("2 tensor(s) have another shape")) as error:
        convert_checkpoint(tmp_path, state_dict, fixture.meta["official_flags"]["architecture"])
    assert "'class_embed.weight: expected (2, 32), got (3, 32)'" in str(error.value)
    assert f"'{packed}: expected (96, 32), got (95, 32)'" in str(error.value)


def test_error_messages_name_the_original_keys(fixture):
    """The inverse key map of the error messages gives back every converted key's original name."""
    converted, dropped = convert_original_state_dict(fixture.official_state_dict, 6)
    originals = {converter._original_key(name) for name in converted}
    assert originals == set(fixture.official_state_dict) - set(dropped)


def test_tiny_parameter_count_matches_original(fixture):
    model = fixture.model()
    _, dropped = convert_original_state_dict(fixture.official_state_dict, model.config.num_decoder_layers)
    dropped_count = sum(fixture.official_state_dict[key].numel() for key in dropped)
    assert model.num_parameters() + dropped_count == fixture.meta["num_parameters"]


def read_full_size_listing(path):
    shapes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        shapes[key] = tuple(int(size) for size in shape.strip("()").split(",") if size.strip())
    return shapes


@pytest.mark.parametrize(
    "preset, listing",
    [("mad", "official-state-dict-mad.txt"), ("ego4d-nlq-finetune", "official-state-dict-ego4d.txt")],
)
def test_full_size_layout_of_the_conversion_tests_is_the_originals(original_fixtures_dir, preset, listing):
    """The layout `test_convert_original_checkpoint.py` converts without fixtures is the one the original code
    builds for the recipe: the same keys and shapes as its listing."""
    assert read_full_size_listing(original_fixtures_dir / listing) == full_size_layout(preset)
