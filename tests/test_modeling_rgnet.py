"""Model tests in the shape of transformers' model tests, on a tiny configuration."""

import math

import pytest
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

import modeling_rgnet
from configuration_rgnet import RGNetConfig
from modeling_rgnet import (
    RGNetForVideoGrounding,
    RGNetModel,
    RGNetXavierLinear,
    anchor_sine_embedding,
    build_selector_attention_bias,
    video_sine_position_encoding,
)


class RGNetModelTester:
    """Tiny hyperparameters and builders; tests only wire them."""

    def __init__(self, num_queries=3, num_frames=12, num_tokens=5, seed=0):
        self.num_queries = num_queries
        self.num_frames = num_frames
        self.num_tokens = num_tokens
        self.seed = seed

    def get_config(self, **overrides):
        fields = {
            "hidden_size": 32,
            "num_attention_heads": 4,
            "num_text_to_video_layers": 1,
            "num_encoder_layers": 1,
            "num_decoder_layers": 2,
            "num_moment_queries": 3,
            "ffn_dim": 64,
            "video_feature_dim": 16,
            "pooled_text_dim": 16,
            "text_feature_dim": 24,
            "max_window_frames": self.num_frames,
            "max_text_tokens": self.num_tokens,
            "retrieval_loss_weight": 1.0,
        }
        return RGNetConfig(**{**fields, **overrides})

    def prepare_inputs(self, num_pairs, config=None, seed=None):
        config = config or self.get_config()
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        video_lengths = torch.randint(1, self.num_frames + 1, (num_pairs,), generator=generator)
        video_lengths[0] = self.num_frames  # one full window
        text_lengths = torch.randint(1, self.num_tokens + 1, (num_pairs,), generator=generator)
        video_mask = (torch.arange(self.num_frames)[None] < video_lengths[:, None]).float()
        text_mask = (torch.arange(self.num_tokens)[None] < text_lengths[:, None]).float()
        video = torch.randn(num_pairs, self.num_frames, config.video_feature_dim, generator=generator)
        text = torch.randn(num_pairs, self.num_tokens, config.text_feature_dim, generator=generator)
        text = text / (text.norm(dim=-1, keepdim=True) + 1e-5)
        return {
            "video_features": video * video_mask[..., None],
            "video_mask": video_mask,
            "text_features": text * text_mask[..., None],
            "text_mask": text_mask,
        }

    def prepare_labels(self, batch_mode, inputs):
        """Targets for the positive windows of a batch laid out for `batch_mode`."""
        num_pairs = inputs["video_mask"].shape[0]
        num_windows = math.isqrt(num_pairs) if batch_mode == "cross_pairs" else num_pairs // 2
        positive_rows = (
            torch.arange(num_windows) * (num_windows + 1) if batch_mode == "cross_pairs" else torch.arange(num_windows)
        )
        lengths = inputs["video_mask"][positive_rows].sum(1).long()
        generator = torch.Generator().manual_seed(1)
        centers = 0.2 + 0.6 * torch.rand(num_windows, generator=generator)
        widths = 0.1 + 0.3 * torch.rand(num_windows, generator=generator)
        positive = (centers * lengths).long().clamp(max=lengths - 1)
        negative = torch.where(positive > 0, torch.zeros_like(positive), lengths - 1)
        return {
            "batch_mode": batch_mode,
            "spans": torch.stack([centers, widths], dim=1),
            "saliency_positive_frames": positive[:, None],
            "saliency_negative_frames": negative[:, None],
        }

    def cross_pairs_batch(self, num_windows, config=None):
        """`B` queries × their `B` windows, pair `i·B + j` = (query `i`, window `j`)."""
        base = self.prepare_inputs(num_windows, config)
        query = torch.arange(num_windows).repeat_interleave(num_windows)
        window = torch.arange(num_windows).repeat(num_windows)
        return {
            "video_features": base["video_features"][window],
            "video_mask": base["video_mask"][window],
            "text_features": base["text_features"][query],
            "text_mask": base["text_mask"][query],
        }

    def create_and_check_model(self, config, inputs):
        model = RGNetModel(config).eval()
        with torch.no_grad():
            outputs = model(**inputs)
        num_pairs, num_frames = inputs["video_mask"].shape
        layers, queries, hidden = config.num_decoder_layers, config.num_moment_queries, config.hidden_size
        assert outputs.decoder_hidden_states.shape == (layers, num_pairs, queries, hidden)
        assert outputs.reference_anchors.shape == (layers, num_pairs, queries, 2)
        assert outputs.encoder_last_hidden_state.shape == (num_pairs, num_frames, hidden)
        assert outputs.global_hidden_state.shape == (num_pairs, hidden)
        assert outputs.frame_selection.shape == (num_pairs, num_frames)
        assert outputs.selector_raw_logits.shape == (num_pairs, num_frames + 1)

    def create_and_check_for_video_grounding(self, config, inputs):
        model = RGNetForVideoGrounding(config).eval()
        with torch.no_grad():
            outputs = model(**inputs)
        num_pairs, num_frames = inputs["video_mask"].shape
        queries = config.num_moment_queries
        assert outputs.logits.shape == (num_pairs, queries, 2)
        assert outputs.pred_spans.shape == (num_pairs, queries, 2)
        assert ((outputs.pred_spans > 0) & (outputs.pred_spans < 1)).all()
        assert outputs.window_logits.shape == (num_pairs, 1)
        assert outputs.saliency_scores.shape == (num_pairs, num_frames)
        assert outputs.frame_selection.shape == (num_pairs, num_frames)
        assert len(outputs.auxiliary_outputs) == config.num_decoder_layers - 1
        assert outputs.auxiliary_outputs[0]["pred_spans"].shape == (num_pairs, queries, 2)
        assert outputs.loss is None


@pytest.fixture
def tester():
    return RGNetModelTester()


def outputs_of(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs)


def trim(inputs, index):
    """Pair `index` alone, without padding."""
    num_frames = int(inputs["video_mask"][index].sum())
    num_tokens = int(inputs["text_mask"][index].sum())
    return {
        "video_features": inputs["video_features"][index : index + 1, :num_frames],
        "video_mask": inputs["video_mask"][index : index + 1, :num_frames],
        "text_features": inputs["text_features"][index : index + 1, :num_tokens],
        "text_mask": inputs["text_mask"][index : index + 1, :num_tokens],
    }


# ---- shapes, determinism, save/load ----


def test_model(tester):
    tester.create_and_check_model(tester.get_config(), tester.prepare_inputs(4))


def test_for_video_grounding(tester):
    tester.create_and_check_for_video_grounding(tester.get_config(), tester.prepare_inputs(4))


@pytest.mark.parametrize("preset", ["mad", "ego4d-nlq-finetune"])
def test_shapes_follow_the_preset_config(preset, tester):
    config = RGNetConfig.from_preset(
        preset, hidden_size=32, num_attention_heads=4, ffn_dim=64, num_decoder_layers=3, max_window_frames=20
    )
    tester.num_frames = 20
    tester.create_and_check_for_video_grounding(config, tester.prepare_inputs(2, config))


def test_eval_forward_is_deterministic(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(4)
    first, second = outputs_of(model, inputs), outputs_of(model, inputs)
    torch.testing.assert_close(first.logits, second.logits, atol=0, rtol=0)
    torch.testing.assert_close(first.saliency_scores, second.saliency_scores, atol=0, rtol=0)


def test_save_and_load_gives_bit_identical_outputs(tester, tmp_path):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = RGNetForVideoGrounding.from_pretrained(tmp_path).eval()
    inputs = tester.prepare_inputs(3)
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores"):
        torch.testing.assert_close(
            getattr(outputs_of(model, inputs), name), getattr(outputs_of(reloaded, inputs), name), atol=0, rtol=0
        )


def test_base_model_loads_from_grounding_checkpoint(tester, tmp_path):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    model.save_pretrained(tmp_path)
    base = RGNetModel.from_pretrained(tmp_path).eval()
    inputs = tester.prepare_inputs(2)
    torch.testing.assert_close(
        outputs_of(base, inputs).global_hidden_state, outputs_of(model, inputs).global_hidden_state, atol=0, rtol=0
    )


# ---- independence of batch composition and padding ----


def test_pair_outputs_do_not_depend_on_other_pairs_in_the_batch(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(5)
    batched = outputs_of(model, inputs)
    for index in range(5):
        alone = outputs_of(model, trim(inputs, index))
        num_frames = alone.saliency_scores.shape[1]
        torch.testing.assert_close(batched.logits[index], alone.logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.pred_spans[index], alone.pred_spans[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.window_logits[index], alone.window_logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            batched.saliency_scores[index, :num_frames], alone.saliency_scores[0], atol=1e-5, rtol=1e-5
        )


def test_padding_frames_and_tokens_do_not_change_predictions(tester):
    config = tester.get_config(max_window_frames=20)
    model = RGNetForVideoGrounding(config).eval()
    inputs = tester.prepare_inputs(3)
    padded = {
        "video_features": torch.nn.functional.pad(inputs["video_features"], (0, 0, 0, 8), value=0.0),
        "video_mask": torch.nn.functional.pad(inputs["video_mask"], (0, 8)),
        "text_features": torch.nn.functional.pad(inputs["text_features"], (0, 0, 0, 3), value=0.0),
        "text_mask": torch.nn.functional.pad(inputs["text_mask"], (0, 3)),
    }
    plain, extra = outputs_of(model, inputs), outputs_of(model, padded)
    torch.testing.assert_close(plain.logits, extra.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain.pred_spans, extra.pred_spans, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain.window_logits, extra.window_logits, atol=1e-5, rtol=1e-5)
    mask = inputs["video_mask"].bool()
    torch.testing.assert_close(plain.saliency_scores[mask], extra.saliency_scores[:, :12][mask], atol=1e-5, rtol=1e-5)


# ---- training ----


@pytest.mark.parametrize("batch_mode", ["cross_pairs", "paired_negative"])
def test_every_learnable_parameter_gets_a_gradient(tester, batch_mode):
    torch.manual_seed(0)
    config = tester.get_config(pair_mode=batch_mode)
    model = RGNetForVideoGrounding(config).train()
    inputs = tester.cross_pairs_batch(3) if batch_mode == "cross_pairs" else tester.prepare_inputs(6)
    outputs = model(**inputs, labels=tester.prepare_labels(batch_mode, inputs))
    assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
    outputs.loss.backward()
    # Exact zeros by construction: decoder layer 0 receives all-zero content, so its content projections' weights
    # get none.
    exact_zero = {
        "model.decoder.layers.0.self_attn.q_content.weight",
        "model.decoder.layers.0.self_attn.k_content.weight",
        "model.decoder.layers.0.self_attn.v.weight",
        "model.decoder.layers.0.cross_attn.q_content.weight",
    }
    # Biases that shift both sides of every hinge: the saliency frame bias under ranking terms only (cross pairs),
    # the retrieval bias under the paired-negative hinge.
    # The retrieval bias cancels in both (InfoNCE is shift-invariant per row and column), so it is exactly zero in
    # exact arithmetic and may or may not round to 0.0: it is not asserted non-zero.
    exact_zero.update(
        {"saliency_frame_proj.bias", "retrieval_head.bias"} if batch_mode == "cross_pairs" else {"retrieval_head.bias"}
    )
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        if name not in exact_zero:
            assert param.grad.abs().sum() > 0, f"{name} received an all-zero gradient"


def test_retrieval_head_gets_no_gradient_when_its_weight_is_zero(tester):
    config = tester.get_config(pair_mode="paired_negative", retrieval_loss_weight=0.0)
    model = RGNetForVideoGrounding(config).train()
    inputs = tester.prepare_inputs(6)
    outputs = model(**inputs, labels=tester.prepare_labels("paired_negative", inputs))
    assert "loss_retrieval" not in outputs.loss_dict
    outputs.loss.backward()
    assert model.retrieval_head.weight.grad is None


def test_loss_and_selector_settings_follow_changes_to_the_config(tester):
    # E.g. finetuning a pretrained model without the retrieval term: the config is changed after loading, and the
    # saved config must describe the loss that was trained with.
    model = RGNetForVideoGrounding(tester.get_config(dropout=0.0, input_dropout=0.0)).train()
    inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", inputs)
    noise = torch.rand(4, tester.num_frames + 1, generator=torch.Generator().manual_seed(0))
    before = model(**inputs, labels=labels, selector_noise=noise)
    model.config.retrieval_loss_weight = 0.0
    after = model(**inputs, labels=labels, selector_noise=noise)
    assert "loss_retrieval" in before.loss_dict and "loss_retrieval" not in after.loss_dict
    torch.testing.assert_close(after.loss, before.loss - before.loss_dict["loss_retrieval"])  # its weight was 1

    def selector_gradient(model):
        model.zero_grad()
        model(**inputs, labels=labels, selector_noise=noise).loss.backward()
        return model.model.frame_selector.dense.weight.grad.clone()

    gradient_at_default = selector_gradient(model)
    model.config.selector_temperature = 5.0
    rebuilt = RGNetForVideoGrounding(tester.get_config(dropout=0.0, input_dropout=0.0, selector_temperature=5.0))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.config.retrieval_loss_weight = 0.0
    gradient = selector_gradient(model)
    assert not torch.allclose(gradient, gradient_at_default)
    torch.testing.assert_close(gradient, selector_gradient(rebuilt.train()), atol=0, rtol=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("contrastive_temperature", 0.0, "`contrastive_temperature` must be positive"),
        ("retrieval_loss_weight", float("nan"), "`retrieval_loss_weight` must be a finite number"),
        ("saliency_margin", -0.2, "`saliency_margin` must be non-negative"),
    ],
)
def test_loss_settings_changed_on_the_config_are_checked_at_the_next_loss(tester, field, value, message):
    # Setting them on `model.config` is the documented way to change the loss after loading; a bad value would
    # otherwise give a NaN or infinite loss without an error.
    model = RGNetForVideoGrounding(tester.get_config()).train()
    inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", inputs)
    model(**inputs, labels=labels)
    setattr(model.config, field, value)
    with pytest.raises(ValueError, match=message):
        model(**inputs, labels=labels)


def test_overfitting_one_small_batch_drives_the_loss_down(tester):
    torch.manual_seed(0)
    config = tester.get_config(dropout=0.0, input_dropout=0.0)
    model = RGNetForVideoGrounding(config).train()
    inputs = tester.cross_pairs_batch(3)
    labels = tester.prepare_labels("cross_pairs", inputs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        outputs = model(**inputs, labels=labels)
        optimizer.zero_grad()
        outputs.loss.backward()
        optimizer.step()
        losses.append(outputs.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_injected_selector_noise_reproduces_a_training_forward(tester):
    config = tester.get_config(dropout=0.0, input_dropout=0.0)
    model = RGNetForVideoGrounding(config).train()
    inputs = tester.prepare_inputs(4)
    noise = torch.rand(4, tester.num_frames + 1, generator=torch.Generator().manual_seed(3))
    first, second = outputs_of(model, inputs, selector_noise=noise), outputs_of(model, inputs, selector_noise=noise)
    torch.testing.assert_close(first.logits, second.logits, atol=0, rtol=0)
    torch.testing.assert_close(first.selector_logits, second.selector_logits, atol=0, rtol=0)
    # The noise used is the one given: logistic noise log(u) − log(1 − u) on the gate's logits (spec §5.4).
    base = RGNetModel(model.config).train()
    base.load_state_dict(model.model.state_dict())
    with torch.no_grad():
        raw = base(**inputs, selector_noise=noise).selector_raw_logits
    expected = raw + torch.log(noise + 1e-8) - torch.log(1 - noise + 1e-8)
    torch.testing.assert_close(first.selector_logits, expected[:, 1:], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradient_checkpointing_gives_the_same_gradients(tester, dropout, use_reentrant, monkeypatch):
    # With dropout the recomputed forward must draw the masks of the first one: the CPU kernels seed them from
    # torch's global generator, whose state checkpointing restores (every attention map through the CPU kernel).
    # The reentrant form runs its first pass without gradients: the kernels must not depend on the grad mode.
    monkeypatch.setattr(modeling_rgnet._CPUDropoutAttention, "min_map_elements", 1)
    config = tester.get_config(dropout=dropout, input_dropout=dropout)
    inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", inputs)
    noise = torch.rand(4, tester.num_frames + 1, generator=torch.Generator().manual_seed(3))
    model = RGNetForVideoGrounding(config).train()
    checkpointed = RGNetForVideoGrounding(config).train()
    checkpointed.load_state_dict(model.state_dict())
    checkpointed.activation_checkpointing_enable({"use_reentrant": use_reentrant})
    assert checkpointed.is_activation_checkpointing
    # Count each layer's uses (module hooks, outside the checkpoint) and its forward runs inside the checkpoint.
    uses, runs = {}, {}

    def counted(name, checkpoint):
        def run_layer(forward, *args, **kwargs):
            def counted_forward(*forward_args, **forward_kwargs):
                runs[name] = runs.get(name, 0) + 1
                return forward(*forward_args, **forward_kwargs)

            return checkpoint(counted_forward, *args, **kwargs)

        return run_layer

    for name, module in checkpointed.named_modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.register_forward_hook(lambda *_, n=name: uses.__setitem__(n, uses.get(n, 0) + 1))
            module._gradient_checkpointing_func = counted(name, module._gradient_checkpointing_func)
    for candidate in (model, checkpointed):
        with torch.random.fork_rng():
            torch.manual_seed(11)
            candidate(**inputs, labels=labels, selector_noise=noise).loss.backward()
    # Every layer really is recomputed in the backward pass (otherwise the gradients would agree trivially).
    assert len(uses) == 4 and runs == {name: 2 * count for name, count in uses.items()}
    for (name, param), other in zip(model.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(param.grad, other.grad, atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_bf16_autocast_forward_and_backward(tester):
    model = RGNetForVideoGrounding(tester.get_config()).train()
    inputs = tester.cross_pairs_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(**inputs, labels=tester.prepare_labels("cross_pairs", inputs))
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eval_predictions_under_bf16_autocast_stay_close_to_fp32(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(4)
    reference = outputs_of(model, inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = outputs_of(model, inputs)
    torch.testing.assert_close(reduced.pred_spans.float(), reference.pred_spans, atol=0.05, rtol=0)
    assert torch.isfinite(reduced.window_logits).all()


def test_bfloat16_weights_take_float32_features_and_keep_float32_moments(tester, monkeypatch):
    # `from_pretrained(..., dtype=torch.bfloat16)` / `.to(torch.bfloat16)`: the processor's float32 features are cast
    # to the weights' dtype; anchors, spans and the heads' outputs stay float32.
    monkeypatch.setattr(modeling_rgnet._CPUDropoutAttention, "min_map_elements", 1)  # its float32 kernel in training
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(4)
    reference = outputs_of(model, inputs)
    reduced = outputs_of(model.to(torch.bfloat16), inputs)
    for name in ("logits", "pred_spans", "window_logits", "reference_anchors"):
        assert reduced[name].dtype == torch.float32, name
    assert reduced.encoder_last_hidden_state.dtype == torch.bfloat16
    torch.testing.assert_close(reduced.pred_spans, reference.pred_spans, atol=0.05, rtol=0)
    torch.testing.assert_close(reduced.window_logits, reference.window_logits, atol=0.1, rtol=0)
    # The same with bfloat16 features, and a training step's gradients reach the bfloat16 weights.
    bf16_inputs = {key: value.to(torch.bfloat16) for key, value in inputs.items()}
    torch.testing.assert_close(outputs_of(model, bf16_inputs).pred_spans, reduced.pred_spans)
    model.train()
    batch = tester.cross_pairs_batch(2)
    model(**batch, labels=tester.prepare_labels("cross_pairs", batch)).loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.dtype == torch.bfloat16, name
        assert torch.isfinite(parameter.grad).all(), name


def test_heads_run_in_float32_with_bfloat16_weights():
    head = modeling_rgnet.RGNetMLP(8, 8, 2, 3, xavier=False)
    hidden = torch.randn(5, 8)
    expected = head(hidden.bfloat16().float())  # float32 arithmetic on the bfloat16-rounded weights and inputs
    head.to(torch.bfloat16)
    output = modeling_rgnet.run_head_in_float32(head, hidden.bfloat16())
    assert output.dtype == torch.float32
    rounded = {name: parameter.float() for name, parameter in head.named_parameters()}
    torch.testing.assert_close(output, torch.func.functional_call(head, rounded, (hidden.bfloat16().float(),)))
    assert not torch.equal(output, expected.detach())  # not the float32 head: its weights were rounded
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast does not narrow it again
        assert modeling_rgnet.run_head_in_float32(head, hidden).dtype == torch.float32


def test_float64_model_keeps_float64_and_passes_gradcheck(tester, monkeypatch):
    # The heads, the anchors and the span arithmetic run in float32 *or wider*: bfloat16 goes up to float32 (above),
    # float64 stays float64. Rounded to float32, the outputs would fail `gradcheck`.
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config(dropout=0.0, input_dropout=0.0)).to(torch.float64).eval()
    inputs = {key: value.double() for key, value in tester.prepare_inputs(2).items()}
    outputs = model(**inputs)
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores", "reference_anchors"):
        assert outputs[name].dtype == torch.float64, name
    torch.testing.assert_close(outputs.logits, model.class_head(outputs.decoder_hidden_states[-1]), atol=0, rtol=0)
    # The window score through the trunk (video features, a text-to-video weight); the moments through their heads
    # (upstream of the decoder the gradient leaves out the detached anchors of DAB-DETR: not a derivative there).
    names = ["model.text_to_video.layers.0.attn.q_proj.weight", "span_head.layers.0.weight", "class_head.weight"]
    parameters = dict(model.named_parameters())
    values = [parameters[name].detach().clone().requires_grad_(True) for name in names]

    def grounding(video_features, *weights):
        kwargs = {**inputs, "video_features": video_features}
        out = torch.func.functional_call(model, dict(zip(names, weights, strict=True)), args=(), kwargs=kwargs)
        return out.window_logits, out.logits, out.pred_spans

    def window_score(video_features, weight):
        return grounding(video_features, weight, *values[1:])[0]

    def moments(*head_weights):
        return grounding(inputs["video_features"], values[0].detach(), *head_weights)[1:]

    video = inputs["video_features"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(window_score, (video, values[0]), fast_mode=True)
    assert torch.autograd.gradcheck(moments, tuple(values[1:]), fast_mode=True)

    # Training with dropout: the CPU attention kernel computes float64 inputs in float64 too.
    q, k, v = torch.randn(3, 2, 4, 7, 8, dtype=torch.float64)
    attended = modeling_rgnet._CPUDropoutAttention.apply(q, k, v, None, 0.0)
    torch.testing.assert_close(attended, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-12, rtol=0)
    monkeypatch.setattr(modeling_rgnet._CPUDropoutAttention, "min_map_elements", 1)
    model = RGNetForVideoGrounding(tester.get_config()).to(torch.float64).train()
    batch = {key: value.double() for key, value in tester.cross_pairs_batch(2).items()}
    outputs = model(**batch, labels=tester.prepare_labels("cross_pairs", batch))
    assert outputs.pred_spans.dtype == outputs.window_logits.dtype == outputs.loss.dtype == torch.float64
    assert all(term.dtype == torch.float64 for term in outputs.loss_dict.values())
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.dtype == torch.float64, name
        assert torch.isfinite(parameter.grad).all(), name


def test_frame_selector_noise_and_gate_stay_float32_under_bfloat16():
    """The logistic noise and the gate's threshold are computed in float32 whatever the logits' dtype: bfloat16
    would round a sample u = 1 − 1e-4 to 1 (noise −log(1e-8) = 18.4 instead of 9.2)."""
    torch.manual_seed(0)
    selector = modeling_rgnet.RGNetFrameSelector(RGNetConfig(hidden_size=8, num_attention_heads=2)).train()
    hidden = torch.randn(3, 6, 8)
    noise = torch.full((3, 6), 1 - 1e-4)
    noise[:, ::2] = torch.rand(3, 3)
    gate, noisy_logits, logits = selector(hidden, noise)
    expected_noise = torch.log(noise + 1e-8) - torch.log(1 - noise + 1e-8)
    torch.testing.assert_close(noisy_logits, logits + expected_noise)
    selector.to(torch.bfloat16)
    reduced_gate, reduced_noisy, reduced_logits = selector(hidden.bfloat16(), noise)
    assert reduced_gate.dtype == reduced_noisy.dtype == reduced_logits.dtype == torch.bfloat16
    exact = reduced_logits.float() + expected_noise  # the bfloat16 logits plus the float32 noise
    torch.testing.assert_close(reduced_noisy.float(), exact, atol=0.07, rtol=0)  # only the sum's rounding
    torch.testing.assert_close(reduced_gate.float(), (exact >= 0).float())  # σ(x / τ) ≥ ½ where x ≥ 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 weights, bfloat16 logits: the same arithmetic
        assert selector.float()(hidden, noise)[1].dtype == torch.bfloat16


def test_trainer_scales_the_loss_for_gradient_accumulation():
    # The loss is a mean over targets: Trainer must divide it by the accumulation steps itself.
    assert RGNetForVideoGrounding.accepts_loss_kwargs is False


# ---- selector attention modes ----


def test_selector_bias_modes():
    gate = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]])  # the global token's value is ignored (always selected)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    minimum = torch.finfo(torch.float32).min
    # The released checkpoints' rule as written: +1 on every key but itself in non-selected rows, padding excluded.
    original = torch.tensor(
        [
            [0, 0, 0, minimum, minimum],
            [0, 0, 0, minimum, minimum],
            [1, 1, 0, minimum, minimum],
            [0, 0, 0, minimum, minimum],
            [1, 1, 1, minimum, minimum],
        ]
    )
    additive = build_selector_attention_bias(gate, mask, "additive_unit_bias", torch.float32)[0, 0]
    # Built as -1 on the row's own key instead: a per-row constant, so the attention weights are the same.
    scores = torch.randn(7, 5, 5, generator=torch.Generator().manual_seed(0)) * 3
    torch.testing.assert_close((scores + additive).softmax(-1), (scores + original).softmax(-1))
    assert additive[2, 2] == -1 and additive[4, 4] == minimum and (additive[:2, :3] == 0).all()
    hard = build_selector_attention_bias(gate, mask, "hard_mask", torch.float32)[0, 0]
    assert hard[2, 2] == 0 and hard[2, 0] == minimum and hard[2, 1] == minimum
    assert (hard[:2, :3] == 0).all() and (hard[:, 3:] == minimum).all()
    # A padded non-selected row (4) keeps the padding bias: with its own key padded it would have no key left, a row
    # that fused kernels and the math kernel fill differently.
    assert (hard[4, :3] == 0).all()
    for mode in ("additive_unit_bias", "hard_mask"):  # the bias is a view into rows padded to 8 elements
        bias = build_selector_attention_bias(gate, mask, mode, torch.bfloat16)
        assert bias.shape == (1, 1, 5, 5) and bias.dtype == torch.bfloat16 and bias.stride(-2) == 8


def test_hard_mask_mode_changes_outputs(tester):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    paper = RGNetForVideoGrounding(tester.get_config(selector_attention_mode="hard_mask")).eval()
    paper.load_state_dict(model.state_dict())
    inputs = tester.prepare_inputs(3)
    first, second = outputs_of(model, inputs), outputs_of(paper, inputs)
    torch.testing.assert_close(first.frame_selection, second.frame_selection)
    assert (first.encoder_last_hidden_state - second.encoder_last_hidden_state).abs().max() > 1e-4


# ---- pure functions ----


def test_video_position_encoding_uses_the_valid_length():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    encoding = video_sine_position_encoding(mask, hidden_size=4, temperature=100.0)
    last_position = 2 * math.pi * 2 / (2 + 1e-6)
    assert math.isclose(encoding[0, 1, 0].item(), math.sin(last_position), abs_tol=1e-6)
    torch.testing.assert_close(encoding[0, 3], encoding[0, 1])  # padding repeats the last valid position
    assert math.isclose(encoding[1, 0, 3].item(), math.cos(2 * math.pi / 4 / 100 ** (2 / 4)), abs_tol=1e-6)


def test_anchor_sine_embedding_layout():
    anchors = torch.tensor([[[0.25, 0.5]]])
    embedding = anchor_sine_embedding(anchors, hidden_size=8)
    assert embedding.shape == (1, 1, 8)
    # 4 features per coordinate: sin, cos at frequency 1, then at 10000^(4/8); center block first.
    expected_center = [math.sin(2 * math.pi * 0.25), math.cos(2 * math.pi * 0.25)]
    expected_width_slow = [math.sin(2 * math.pi * 0.5 / 100), math.cos(2 * math.pi * 0.5 / 100)]
    torch.testing.assert_close(embedding[0, 0, :2], torch.tensor(expected_center))
    torch.testing.assert_close(embedding[0, 0, 6:], torch.tensor(expected_width_slow))


def test_initialisation_follows_the_spec(tester):
    torch.manual_seed(0)
    config = tester.get_config(hidden_size=64, ffn_dim=128, num_decoder_layers=3)
    model = RGNetForVideoGrounding(config)
    xavier_layers = [m for m in model.modules() if isinstance(m, RGNetXavierLinear)]
    assert len(xavier_layers) > 30
    for module in xavier_layers:
        bound = math.sqrt(6 / (module.in_features + module.out_features))
        assert module.weight.abs().max() <= bound
        if module.weight.numel() >= 64 * 64:  # enough draws to tell U(-bound, bound) from a narrower uniform
            assert module.weight.abs().max() > 0.95 * bound
            assert abs(module.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.05
        if module.zero_bias:
            assert (module.bias == 0).all()
    assert (model.model.text_to_video.layers[0].attn.q_proj.bias == 0).all()
    assert (model.model.decoder.anchor_update_heads[0].layers[-1].bias == 0).all()
    assert (model.model.decoder.layers[0].cross_attn.q_content.bias != 0).any()
    # Input projections and heads keep PyTorch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert 0.9 / math.sqrt(64) < model.class_head.weight.abs().max() <= 1 / math.sqrt(64)
    assert (model.model.video_projection.blocks[0].norm.weight == 1).all()
    tokens = torch.cat(
        [model.model.global_token, model.model.global_position, model.model.anchor_embeddings.flatten()]
    )
    assert 0.6 < tokens.std() < 1.4  # N(0, 1)


# ---- optional text encoder ----


def tiny_text_config():
    """A one-layer CLIP text tower whose width is the tester's `text_feature_dim` (24)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=99,
        hidden_size=24,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=16,
        eos_token_id=2,
        bos_token_id=1,
        pad_token_id=0,
    )


def test_text_encoder_path_matches_precomputed_token_features(tester):
    config = tester.get_config(text_config=tiny_text_config())
    model = RGNetForVideoGrounding(config).eval()
    input_ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    features, mask = model.model.encode_text(input_ids, attention_mask)
    assert features.shape == (2, 4, 24) and mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    torch.testing.assert_close(features[0, :3].norm(dim=-1), torch.ones(3), atol=1e-4, rtol=0)
    assert (features[1, 1:] == 0).all()
    video = tester.prepare_inputs(2)
    with torch.no_grad():
        from_ids = model(
            video_features=video["video_features"],
            video_mask=video["video_mask"],
            input_ids=input_ids,
            attention_mask=attention_mask,
        )
        from_features = model(
            video_features=video["video_features"],
            video_mask=video["video_mask"],
            text_features=features,
            text_mask=mask,
        )
    torch.testing.assert_close(from_ids.logits, from_features.logits, atol=0, rtol=0)


def test_the_text_encoder_is_frozen_unless_the_config_says_otherwise(tester, tmp_path):
    """Frozen (the default, as the recipes' pre-extracted text features): no gradient, eval mode in training, and
    so after `save_pretrained` / `from_pretrained`; `freeze_text_encoder=False` trains it."""
    input_ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    video = tester.prepare_inputs(2)

    def text_encoder_gradients(model):
        model.train()
        assert model.model.text_encoder.training == (not model.config.freeze_text_encoder)
        outputs = model(
            video_features=video["video_features"],
            video_mask=video["video_mask"],
            input_ids=input_ids,
            attention_mask=(input_ids != 0).long(),
        )
        (outputs.window_logits.sum() + outputs.logits.sum()).backward()
        assert any(weight.grad is not None for weight in model.model.video_projection.parameters())
        return [weight.grad for weight in model.model.text_encoder.parameters()]

    frozen = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config()))
    assert not any(weight.requires_grad for weight in frozen.model.text_encoder.parameters())
    assert all(grad is None for grad in text_encoder_gradients(frozen))
    frozen.save_pretrained(tmp_path / "frozen")
    reloaded = RGNetForVideoGrounding.from_pretrained(tmp_path / "frozen")
    assert reloaded.config.freeze_text_encoder
    assert not any(weight.requires_grad for weight in reloaded.model.text_encoder.parameters())
    assert all(grad is None for grad in text_encoder_gradients(reloaded))
    trained = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config(), freeze_text_encoder=False))
    gradients = text_encoder_gradients(trained)
    assert all(grad is not None for grad in gradients) and any(grad.abs().sum() > 0 for grad in gradients)
    assert not trained.eval().model.text_encoder.training and not frozen.eval().model.text_encoder.training


def test_left_padded_token_ids_are_an_error(tester):
    """The start and end tokens are dropped by position: right padding only."""
    model = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config())).eval()
    left = torch.tensor([[1, 5, 6, 7, 2], [0, 0, 1, 8, 2]])
    with pytest.raises(ValueError, match="`attention_mask` must pad on the right"):
        model.model.encode_text(left, (left != 0).long())


def test_more_real_tokens_than_max_text_tokens_is_an_error(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)
    longer = {
        **inputs,
        "text_features": torch.cat([inputs["text_features"], inputs["text_features"][:, :2]], dim=1),
        "text_mask": torch.ones(2, inputs["text_mask"].shape[1] + 2),
    }
    with pytest.raises(ValueError, match="`text_mask` marks more than config.max_text_tokens"):
        model(**longer)


# ---- bad inputs ----


@pytest.mark.parametrize(
    "mutate, argument",
    [
        (lambda x: x.update(video_features=torch.randn(2, 12, 7)), "video_features"),
        (lambda x: x.update(text_features=torch.randn(2, 5, 7)), "text_features"),
        (lambda x: x.update(video_mask=torch.ones(2, 11)), "video_mask"),
        (lambda x: x.update(text_mask=torch.ones(3, 5)), "text_mask"),
        (lambda x: x["video_mask"].__setitem__(1, 0.0), "video_mask"),
        (lambda x: x["text_mask"].__setitem__(0, 0.0), "text_mask"),
        (lambda x: x["video_features"].__setitem__((0, 0, 0), float("nan")), "video_features"),
        (lambda x: x["text_features"].__setitem__((1, 0, 0), float("inf")), "text_features"),
        (lambda x: x.update(video_features=torch.randn(2, 13, 16), video_mask=torch.ones(2, 13)), "max_window_frames"),
    ],
)
def test_bad_inputs_raise_a_clear_error(tester, mutate, argument):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)
    mutate(inputs)
    with pytest.raises(ValueError, match=argument):
        model(**inputs)


def test_labels_for_the_wrong_batch_mode_raise(tester):
    model = RGNetForVideoGrounding(tester.get_config()).train()
    inputs = tester.cross_pairs_batch(2)  # 4 pairs: B = 2 windows in cross_pairs mode
    labels = tester.prepare_labels("cross_pairs", inputs)
    with pytest.raises(ValueError, match="batch_mode"):
        model(**inputs, labels={**labels, "batch_mode": "triplets"})
    with pytest.raises(ValueError, match="spans"):
        model(**inputs, labels={key: value for key, value in labels.items() if key != "spans"})
    paired = tester.prepare_labels("paired_negative", tester.prepare_inputs(6))
    with pytest.raises(ValueError, match="batch_mode"):
        model(**inputs, labels=paired)  # 3 windows in paired_negative mode need 6 pairs, not 4


def test_input_ids_without_text_encoder_raise(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)
    with pytest.raises(ValueError, match="text_config"):
        model(
            video_features=inputs["video_features"], video_mask=inputs["video_mask"], input_ids=torch.ones(2, 4).long()
        )


def test_bad_input_types_and_mask_values_raise_a_clear_error(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)
    with pytest.raises(TypeError, match="`video_features` must be a floating-point torch.Tensor; got ndarray"):
        model(**{**inputs, "video_features": inputs["video_features"].numpy()})
    with pytest.raises(TypeError, match="`text_features` must be a floating-point torch.Tensor; got torch.int64"):
        model(**{**inputs, "text_features": inputs["text_features"].long()})
    with pytest.raises(TypeError, match="`video_mask` must be a torch.Tensor"):
        model(**{**inputs, "video_mask": inputs["video_mask"].numpy()})
    for bad in (0.5, -1.0, float("nan")):  # a mask is 0 or 1: positions are its running sum
        mask = inputs["video_mask"].clone()
        mask[0, 0] = bad
        with pytest.raises(ValueError, match="`video_mask` must hold only 1"):
            model(**{**inputs, "video_mask": mask})
    with pytest.raises(ValueError, match="`text_mask` must hold only 1"):
        model(**{**inputs, "text_mask": inputs["text_mask"] * 2})
    boolean = model(**{**inputs, "video_mask": inputs["video_mask"].bool(), "text_mask": inputs["text_mask"].bool()})
    torch.testing.assert_close(boolean.logits, model(**inputs).logits, atol=0, rtol=0)
    with pytest.raises(ValueError, match="`video_pair_index` must be a 1-D int64 tensor"):
        model(**inputs, video_pair_index=[0, 1])


def test_the_head_model_checks_the_inputs_it_reads_first(tester):
    model = RGNetForVideoGrounding(tester.get_config()).train()
    inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", inputs)
    with pytest.raises(TypeError, match="`video_features` must be a floating-point torch.Tensor; got NoneType"):
        model(**{**inputs, "video_features": None}, labels=labels)
    with pytest.raises(ValueError, match=r"`video_features` must have shape \(num_pairs, num_frames, 16\)"):
        model(**{**inputs, "video_features": inputs["video_features"][0]}, labels=labels)
    with pytest.raises(ValueError, match="`video_pair_index` must be a 1-D int64 tensor"):
        model(**inputs, video_pair_index=torch.tensor(0), labels=labels)


@pytest.mark.parametrize("flag", ["output_attentions", "output_hidden_states"])
def test_attention_maps_and_hidden_states_requests_are_refused_clearly(tester, flag):
    inputs = tester.prepare_inputs(2)
    for model_class in (RGNetModel, RGNetForVideoGrounding):
        model = model_class(tester.get_config()).eval()
        model(**inputs, **{flag: False})
        with pytest.raises(ValueError, match=f"`{flag}` is not supported"):
            model(**inputs, **{flag: True})
        with pytest.raises(ValueError, match=f"`{flag}` is not supported"):  # asked for by the config
            model_class(tester.get_config(**{flag: True})).eval()(**inputs)


def test_selector_noise_outside_the_unit_interval_raises_in_training(tester):
    model = RGNetForVideoGrounding(tester.get_config()).train()
    inputs = tester.prepare_inputs(2)
    for bad in (1.5, -0.1, float("nan")):
        noise = torch.full((2, tester.num_frames + 1), 0.5)
        noise[1, 3] = bad
        with pytest.raises(ValueError, match="`selector_noise` must hold uniform samples in \\[0, 1\\]"):
            model(**inputs, selector_noise=noise)
    model(**inputs, selector_noise=torch.tensor([0.0, 1.0]).repeat(2, tester.num_frames // 2 + 1)[:, :13])


def test_bad_input_ids_raise_a_clear_error(tester):
    model = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config())).eval()
    video = tester.prepare_inputs(2)
    video = {"video_features": video["video_features"], "video_mask": video["video_mask"]}
    ids = torch.tensor([[1, 5, 6, 2], [1, 8, 2, 0]])
    for bad, message in (
        (ids[0], "`input_ids` must be an integer tensor of shape \\(num_queries, num_tokens\\)"),
        (ids.float(), "`input_ids` must be an integer tensor"),
        (ids + 98, "`input_ids` must be token ids in \\[0, 99\\)"),
    ):
        with pytest.raises(ValueError, match=message):
            model(**video, input_ids=bad)
    with pytest.raises(ValueError, match="`attention_mask` must have the shape of `input_ids`, \\(2, 4\\)"):
        model(**video, input_ids=ids, attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="`input_ids` has 1 pairs but `video_features` has 2"):
        model(**video, input_ids=ids[:1], attention_mask=(ids[:1] != 0).long())


def test_a_text_mask_under_the_other_text_input_name_raises(tester):
    # The mask of `input_ids` is `attention_mask`, that of `text_features` is `text_mask`: one given under the other
    # name would be ignored (padding tokens read as real ones, or a mask not applied).
    model = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config())).eval()
    inputs = tester.prepare_inputs(2)
    video = {"video_features": inputs["video_features"], "video_mask": inputs["video_mask"]}
    ids = torch.tensor([[1, 5, 6, 2, 0], [1, 8, 2, 0, 0]])
    with pytest.raises(ValueError, match="with `input_ids` pass the token mask as `attention_mask`"):
        model(**video, input_ids=ids, text_mask=(ids != 0).long())
    with pytest.raises(ValueError, match="with `text_features` pass the token mask as `text_mask`"):
        model(**inputs, attention_mask=inputs["text_mask"])
    model(**video, input_ids=ids, attention_mask=(ids != 0).long())  # each mask under its own name


def test_a_config_changed_after_construction_is_checked_when_a_model_is_built(tester):
    # Assignments are only type-checked: an inconsistent width would otherwise fail inside the first attention.
    for model_class in (RGNetModel, RGNetForVideoGrounding):
        config = tester.get_config()
        config.num_attention_heads = 3  # hidden size 32
        with pytest.raises(
            ValueError, match="`hidden_size` \\(32\\) must be divisible by `num_attention_heads` \\(3\\)"
        ):
            model_class(config)


# ---- Hugging Face conventions ----


def test_outputs_put_the_loss_first_and_follow_return_dict(tester):
    model = RGNetForVideoGrounding(tester.get_config(dropout=0.0, input_dropout=0.0)).train()
    inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", inputs)
    noise = torch.rand(4, tester.num_frames + 1, generator=torch.Generator().manual_seed(0))
    outputs = model(**inputs, labels=labels, selector_noise=noise)
    assert list(outputs.keys())[:3] == ["loss", "loss_dict", "logits"]
    as_tuple = model(**inputs, labels=labels, selector_noise=noise, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(outputs)
    torch.testing.assert_close(as_tuple[0], outputs.loss, atol=0, rtol=0)
    model.eval()
    base = RGNetModel(model.config).eval()
    model.config.return_dict = False  # the config's setting applies when the call does not say
    try:
        with torch.no_grad():
            assert isinstance(model(**inputs), tuple) and isinstance(base(**inputs), tuple)
            assert not isinstance(model(**inputs, return_dict=True), tuple)
    finally:
        model.config.return_dict = True


def test_loading_info_on_request(tester, tmp_path):
    RGNetForVideoGrounding(tester.get_config()).save_pretrained(tmp_path)
    model, info = RGNetForVideoGrounding.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, RGNetForVideoGrounding)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    base, info = RGNetModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(base, RGNetModel) and not info["missing_keys"]


def test_input_embeddings_and_attention_implementation(tester):
    model = RGNetForVideoGrounding(tester.get_config())
    assert model.config._attn_implementation == "sdpa"
    # Without a text encoder the inputs meet the video projection first: gradients can be required from there.
    assert model.get_input_embeddings() is model.model.video_projection
    model.requires_grad_(False)
    model.enable_input_require_grads()
    assert model(**tester.prepare_inputs(2)).logits.requires_grad
    with pytest.raises(ValueError, match="no token embeddings to resize"):
        model.resize_token_embeddings(10)
    with pytest.raises(ValueError, match="no token embeddings to set"):
        model.set_input_embeddings(torch.nn.Embedding(3, 24))
    with_text = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config()))
    assert with_text.get_input_embeddings() is with_text.model.text_encoder.get_input_embeddings()
    with_text.resize_token_embeddings(120)
    assert with_text.get_input_embeddings().num_embeddings == 120 == with_text.config.text_config.vocab_size


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_enable_input_require_grads_reaches_adapters_behind_a_frozen_text_encoder(tester, use_reentrant):
    # With a text encoder, `get_input_embeddings()` is its token embeddings, and the frozen encoder runs without
    # gradients: the hooks on the projections' outputs make the inputs of the checkpointed layers require them, so
    # an adapter inside those layers gets its gradient under reentrant checkpointing too.
    config = tester.get_config(dropout=0.0, input_dropout=0.0, text_config=tiny_text_config())
    batch = tester.cross_pairs_batch(2)
    input_ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0]])[torch.tensor([0, 0, 1, 1])]  # query i of pair i·B+j
    inputs = {
        "video_features": batch["video_features"],
        "video_mask": batch["video_mask"],
        "input_ids": input_ids,
        "attention_mask": (input_ids != 0).long(),
        "labels": tester.prepare_labels("cross_pairs", batch),
        "selector_noise": torch.rand(4, tester.num_frames + 1, generator=torch.Generator().manual_seed(3)),
    }
    torch.manual_seed(0)
    reference = RGNetForVideoGrounding(config).train()
    gradients = []
    for checkpointed in (False, True):
        model = RGNetForVideoGrounding(config).train()
        model.load_state_dict(reference.state_dict())
        model.requires_grad_(False)  # a frozen base, as PEFT leaves it
        adapter = model.model.text_to_video.layers[0].attn.q_proj  # stands for an adapter weight inside a layer
        adapter.requires_grad_(True)
        model.class_head.requires_grad_(True)
        if checkpointed:
            model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
        model.enable_input_require_grads()
        model(**inputs).loss.backward()
        assert adapter.weight.grad is not None and torch.isfinite(adapter.weight.grad).all()
        gradients.append(adapter.weight.grad)
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-6, rtol=1e-5)
    # `disable_input_require_grads` removes every hook (the token embeddings' and the projections').
    hooked = (model.get_input_embeddings(), model.model.video_projection, model.model.text_projection)
    assert all(module._forward_hooks for module in hooked)
    model.disable_input_require_grads()
    assert not any(module._forward_hooks for module in hooked)
