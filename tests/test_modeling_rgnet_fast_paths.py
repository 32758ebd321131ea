"""The model's speed and memory paths compute the same function as the plain ones.

* `_CPUDropoutAttention` (attention-probability dropout on CPU, pair by pair) against a float64 reference that
  uses the same keep masks;
* `_ReluDropout` (feed-forward activation keeping only its output), `_CPUFeedForward` (the CPU feed-forward block, row
  block by row block) and `_CPUDropout` against a mask drawn the same way, and the masks themselves (`_CPUKeepMasks`:
  Bernoulli, governed by `torch.manual_seed`);
* `grounding_pair_index` (decode only some pairs) against the full batch: outputs, loss terms and gradients;
* `video_pair_index` (each window once) against windows repeated per pair;
* inference forms: `linear_relu` (the feed-forward ReLU fused into `fc1`) and the decoder's folded
  cross-attention against the projected form that training runs.
"""

import copy

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import modeling_rgnet
from modeling_rgnet import RGNetForVideoGrounding
from tests.test_modeling_rgnet import RGNetModelTester, tiny_text_config


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """These tests draw from (and seed) the global generator; later tests in the session must not see it."""
    with torch.random.fork_rng():
        yield


@pytest.fixture
def tester():
    return RGNetModelTester()


@pytest.mark.parametrize("block_elements", [1, 7 * 9 * 2, 1 << 20])
def test_cpu_dropout_attention_matches_a_reference_with_the_same_masks(block_elements, monkeypatch):
    # Blocks of one head, of two heads (the last one smaller), and of a whole pair.
    monkeypatch.setattr(modeling_rgnet._CPUDropoutAttention, "_block_elements", block_elements)
    num_pairs, heads, query_length, key_length, dropout = 5, 3, 7, 9, 0.3
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(num_pairs, heads, query_length, 8, generator=generator, requires_grad=True)
    key = torch.randn(num_pairs, heads, key_length, 8, generator=generator, requires_grad=True)
    value = torch.randn(num_pairs, heads, key_length, 6, generator=generator, requires_grad=True)
    bias = torch.randn(num_pairs, 1, query_length, key_length, generator=generator)
    bias[..., -2:] = torch.finfo(torch.float32).min  # padded keys
    grad_output = torch.randn(num_pairs, heads, query_length, 6, generator=generator)

    torch.manual_seed(1)
    output = modeling_rgnet._CPUDropoutAttention.apply(query, key, value, bias, dropout)
    grads = torch.autograd.grad(output, (query, key, value), grad_output)

    # The same keep masks: one draw per (pair, heads) block, in block order.
    torch.manual_seed(1)
    masks = modeling_rgnet._CPUKeepMasks(dropout)
    keep = torch.empty(num_pairs, heads, query_length, key_length, dtype=torch.bool)
    for block in modeling_rgnet._CPUDropoutAttention._blocks(num_pairs, heads, query_length * key_length):
        keep[block] = masks.fill_(torch.empty(keep[block].shape, dtype=torch.bool))
    inputs64 = [tensor.detach().double().requires_grad_() for tensor in (query, key, value)]
    probs = (inputs64[0] @ inputs64[1].transpose(-1, -2) / 8**0.5 + bias.double()).softmax(-1)
    reference = (probs * keep / (1 - dropout)) @ inputs64[2]
    reference_grads = torch.autograd.grad(reference, inputs64, grad_output.double())

    torch.testing.assert_close(output.double(), reference, atol=1e-5, rtol=1e-5)
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad.double(), reference_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dropout", [0.1, 0.5, 0.9])
def test_keep_masks_are_bernoulli_and_follow_the_torch_seed(dropout):
    torch.manual_seed(3)
    masks = modeling_rgnet._CPUKeepMasks(dropout)
    first, second = (masks.fill_(torch.empty(1 << 21, dtype=torch.bool)) for _ in range(2))
    assert not torch.equal(first, second)  # successive draws continue the stream
    kept = first.double().mean().item()
    assert abs(kept - (1 - dropout)) < 5 * (dropout * (1 - dropout) / first.numel()) ** 0.5
    # Runs of kept elements as long as independent draws make them: P(two neighbours kept) = (1 − p)².
    both = (first[1:] & first[:-1]).double().mean().item()
    assert abs(both - (1 - dropout) ** 2) < 0.005
    torch.manual_seed(3)
    assert torch.equal(modeling_rgnet._CPUKeepMasks(dropout).fill_(torch.empty(1 << 21, dtype=torch.bool)), first)
    torch.manual_seed(4)
    assert not torch.equal(modeling_rgnet._CPUKeepMasks(dropout).fill_(torch.empty(1 << 21, dtype=torch.bool)), first)


def test_cpu_dropout_attention_drops_the_configured_fraction():
    query = torch.zeros(4, 2, 64, 8)  # uniform attention: every probability 1/64
    value = torch.eye(64).expand(4, 2, 64, 64)  # the output row is the dropped probability row itself
    torch.manual_seed(0)
    output = modeling_rgnet._CPUDropoutAttention.apply(query, query, value, None, 0.25)
    kept = output > 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    torch.testing.assert_close(output[kept], torch.full_like(output[kept], 1 / 64 / 0.75))


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_relu_dropout_matches_relu_then_mask(dropout):
    hidden = torch.randn(6, 10, 16, requires_grad=True)
    grad_output = torch.randn(6, 10, 16)
    torch.manual_seed(2)
    output = modeling_rgnet._ReluDropout.apply(hidden.clone(), dropout)
    (grad,) = torch.autograd.grad(output, hidden, grad_output)

    torch.manual_seed(2)
    keep = modeling_rgnet._CPUKeepMasks(dropout).fill_(torch.empty(6, 10, 16, dtype=torch.bool))
    reference = torch.relu(hidden) * keep / (1 - dropout)
    (reference_grad,) = torch.autograd.grad(reference, hidden, grad_output)
    torch.testing.assert_close(output, reference)
    torch.testing.assert_close(grad, reference_grad)


@pytest.mark.parametrize(
    ("dropout", "block_elements", "frozen"),
    [(0.0, 1 << 20, ()), (0.4, 1 << 20, ()), (0.4, 5 * 12, ()), (0.4, 1, ()), (0.3, 8 * 12, ("fc1", "fc2"))],
)
def test_cpu_feed_forward_matches_autograd_with_the_same_mask(dropout, block_elements, frozen, monkeypatch):
    # One block, blocks of 4 rows (the last one of 1: 21 rows), the 4-row minimum, and frozen weights.
    monkeypatch.setattr(modeling_rgnet._CPUFeedForward, "_block_elements", block_elements)
    generator = torch.Generator().manual_seed(0)
    fc1 = torch.nn.Linear(6, 12).requires_grad_("fc1" not in frozen)
    fc2 = torch.nn.Linear(12, 6).requires_grad_("fc2" not in frozen)
    hidden = torch.randn(21, 6, generator=generator, requires_grad=True)
    grad_output = torch.randn(21, 6, generator=generator)
    weights = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    trainable = [tensor for tensor in weights if tensor.requires_grad]

    torch.manual_seed(2)
    output = modeling_rgnet._CPUFeedForward.apply(hidden, *weights, dropout)
    grads = torch.autograd.grad(output, [hidden, *trainable], grad_output)

    torch.manual_seed(2)  # the mask as one draw over the whole (21, 12) activation
    keep = modeling_rgnet._CPUKeepMasks(dropout).fill_(torch.empty(21, 12, dtype=torch.bool))
    inputs64 = [tensor.detach().double().requires_grad_() for tensor in (hidden, *weights)]
    activation = torch.relu(inputs64[0] @ inputs64[1].T + inputs64[2]) * keep / (1 - dropout)
    reference = activation @ inputs64[3].T + inputs64[4]
    trainable64 = [inputs64[0]]
    trainable64 += [tensor64 for tensor64, tensor in zip(inputs64[1:], weights, strict=True) if tensor.requires_grad]
    reference_grads = torch.autograd.grad(reference, trainable64, grad_output.double())

    torch.testing.assert_close(output.double(), reference, atol=1e-5, rtol=1e-5)
    assert len(grads) == len(reference_grads) == 1 + len(trainable)
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad.double(), reference_grad, atol=1e-5, rtol=1e-5)


def test_feed_forward_uses_the_cpu_kernel_only_for_float32_cpu_gradients(monkeypatch):
    config = RGNetModelTester().get_config()
    assert config.dropout > 0
    feed_forward = modeling_rgnet.RGNetFeedForward(config).train()
    calls = []
    original_apply = modeling_rgnet._CPUFeedForward.apply
    monkeypatch.setattr(
        modeling_rgnet._CPUFeedForward, "apply", lambda *args: calls.append(1) or original_apply(*args)
    )
    hidden = torch.randn(2, 5, config.hidden_size)
    torch.manual_seed(0)
    kernel_output = feed_forward(hidden)
    assert len(calls) == 1 and kernel_output.shape == hidden.shape
    with torch.no_grad():
        feed_forward(hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feed_forward(hidden)
    assert len(calls) == 1
    # The plain path (autograd's relu and dropout) with the same seed draws the same mask and computes the same.
    monkeypatch.setattr(modeling_rgnet.RGNetFeedForward, "_runs_cpu_training_kernel", lambda self, hidden: False)
    torch.manual_seed(0)
    torch.testing.assert_close(feed_forward(hidden), kernel_output)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_relu_matches_relu_of_the_linear_layer(dtype):
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(8, 24).to(dtype)
    hidden = torch.randn(30, 8, generator=generator).to(dtype)
    fused = modeling_rgnet.linear_relu(hidden, linear)
    assert fused.dtype == dtype and (fused >= 0).all() and (fused == 0).any()
    torch.testing.assert_close(fused, torch.relu(linear(hidden)))


def test_linear_relu_under_autocast_casts_like_a_linear_layer():
    linear = torch.nn.Linear(8, 24)
    hidden = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = modeling_rgnet.linear_relu(hidden, linear)
        expected = torch.relu(linear(hidden))
    assert fused.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(fused, expected)


def test_feed_forward_fuses_the_relu_only_without_gradients(monkeypatch):
    config = RGNetModelTester().get_config()
    feed_forward = modeling_rgnet.RGNetFeedForward(config).eval()
    calls = []
    original = modeling_rgnet.linear_relu
    monkeypatch.setattr(modeling_rgnet, "linear_relu", lambda *args: calls.append(1) or original(*args))
    hidden = torch.randn(2, 5, config.hidden_size)
    with_gradients = feed_forward(hidden)
    assert not calls
    with torch.no_grad():
        fused = feed_forward(hidden)
    assert len(calls) == 1
    torch.testing.assert_close(fused, with_gradients)


def test_folded_cross_attention_matches_the_projected_form(tester):
    torch.manual_seed(0)
    config = tester.get_config()
    cross_attention = modeling_rgnet.RGNetDecoderCrossAttention(config).eval()
    for linear in (cross_attention.k_content, cross_attention.k_pos, cross_attention.v):  # biases matter or cancel
        torch.nn.init.normal_(linear.bias)
    num_pairs, num_queries, length, hidden = 3, 4, 7, config.hidden_size
    generator = torch.Generator().manual_seed(1)
    content, query_position, query_sine = (
        torch.randn(num_pairs, num_queries, hidden, generator=generator) for _ in "abc"
    )
    memory, memory_position = (torch.randn(num_pairs, length, hidden, generator=generator) for _ in "ab")
    valid = torch.arange(length)[None] < torch.tensor([[7], [4], [1]])  # a full, a padded and a one-frame window
    bias = modeling_rgnet.padding_bias(valid, torch.float32)
    projected = cross_attention(content, query_position, query_sine, memory, memory_position, bias)
    keys = torch.cat([memory, memory_position], dim=-1)
    folded = cross_attention(content, query_position, query_sine, memory, memory_position, bias, memory_keys=keys)
    torch.testing.assert_close(folded, projected, atol=1e-5, rtol=1e-5)
    # Padded frames are ignored: changing them changes nothing.
    noisy = torch.where(valid[..., None], memory, torch.randn_like(memory))
    noisy_keys = torch.cat([noisy, memory_position], dim=-1)
    again = cross_attention(content, query_position, query_sine, noisy, memory_position, bias, memory_keys=noisy_keys)
    torch.testing.assert_close(again, folded, atol=1e-5, rtol=1e-5)


def _count_folded_calls(monkeypatch):
    calls = []
    original = modeling_rgnet.RGNetDecoderCrossAttention._folded_attention
    monkeypatch.setattr(
        modeling_rgnet.RGNetDecoderCrossAttention,
        "_folded_attention",
        lambda *args: calls.append(1) or original(*args),
    )
    return calls


def test_decoder_folds_the_cross_attention_only_for_inference(tester, monkeypatch):
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(5)
    calls = _count_folded_calls(monkeypatch)
    projected = model(**inputs)  # gradients enabled: the projected form
    assert not calls
    with torch.no_grad():
        folded = model(**inputs)
    assert len(calls) == model.config.num_decoder_layers
    for name in ("logits", "pred_spans", "window_logits"):
        torch.testing.assert_close(folded[name], projected[name], atol=1e-5, rtol=1e-5, msg=name)
    model.train()
    with torch.no_grad():  # training mode (attention dropout) keeps the projected form
        model(**inputs)
    model.eval().model.decoder.layers[-1].cross_attn.train()  # one layer in training mode: that one projects
    with torch.no_grad():
        model(**inputs)
    assert len(calls) == 2 * model.config.num_decoder_layers - 1


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16-weights"])
@pytest.mark.parametrize("num_frames", [12, 40])  # 40: windows longer than the hidden size, the factored selector
def test_folded_inference_in_bfloat16_stays_as_close_to_fp32_as_the_projected_form(precision, num_frames):
    """Inference without gradients (folded cross-attention; the factored selector attention on long windows) stays
    as close to fp32 in bfloat16 as the training forms."""
    tester = RGNetModelTester(num_frames=num_frames)
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(6)
    inputs["video_mask"][1:4] = 1.0  # full windows too (with padded ones, the factored form's two paths)
    reference = model(**inputs)
    if precision == "bf16-weights":
        model.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
        projected = model(**inputs)
        with torch.no_grad():
            folded = model(**inputs)
    for name in ("logits", "pred_spans"):
        projected_error = (projected[name].float() - reference[name]).abs().max()
        folded_error = (folded[name].float() - reference[name]).abs().max()
        assert folded_error <= 2 * projected_error + 1e-3, (name, folded_error, projected_error)
        torch.testing.assert_close(folded[name].float(), reference[name].detach(), atol=0.05, rtol=0)


def test_inference_forms_respect_hooks_and_wrapped_layers(tester, monkeypatch):
    """A forward hook (or an adapter replacing the layer) changes what a layer computes: the inference forms that read
    weights directly step aside, so eval outputs with and without gradients still agree."""
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(5)
    cross_attention = model.model.decoder.layers[0].cross_attn
    fc1 = model.model.encoder.layers[0].ffn.fc1
    assert modeling_rgnet.computes_plain_linear(cross_attention.v) and cross_attention.can_fold()
    handles = [
        layer.register_forward_hook(lambda module, args, output: 2 * output) for layer in (cross_attention.v, fc1)
    ]
    assert not modeling_rgnet.computes_plain_linear(cross_attention.v) and not cross_attention.can_fold()
    calls = _count_folded_calls(monkeypatch)
    with_gradients = model(**inputs)
    with torch.no_grad():
        without = model(**inputs)
    assert len(calls) == model.config.num_decoder_layers - 1  # the hooked layer projects, the others fold
    for name in ("logits", "pred_spans", "window_logits"):
        torch.testing.assert_close(without[name], with_gradients[name], atol=1e-5, rtol=1e-5, msg=name)
    for handle in handles:
        handle.remove()
    assert modeling_rgnet.computes_plain_linear(cross_attention.v)

    class Adapter(torch.nn.Linear):  # a subclass with its own forward, as adapter and quantised layers have
        def forward(self, hidden):
            return super().forward(hidden) + 1.0

    assert not modeling_rgnet.computes_plain_linear(Adapter(4, 4))
    wrapped = torch.nn.Linear(4, 4)
    wrapped.forward = lambda hidden: hidden  # accelerate-style instance wrapper
    assert not modeling_rgnet.computes_plain_linear(wrapped)
    assert not modeling_rgnet.computes_plain_linear(torch.nn.Linear(4, 4, bias=False))


@pytest.mark.parametrize("with_residual", [False, True])
def test_cpu_dropout_matches_a_mask_drawn_the_same_way(with_residual):
    hidden = torch.randn(4, 7, 9, requires_grad=True)
    residual = torch.randn(4, 7, 9, requires_grad=True) if with_residual else None
    grad_output = torch.randn(4, 7, 9)
    torch.manual_seed(5)
    output = modeling_rgnet._CPUDropout.apply(hidden, residual, 0.3)
    inputs = (hidden, residual) if with_residual else (hidden,)
    grads = torch.autograd.grad(output, inputs, grad_output)
    torch.manual_seed(5)
    keep = modeling_rgnet._CPUKeepMasks(0.3).fill_(torch.empty(4, 7, 9, dtype=torch.bool))
    expected = hidden * keep / 0.7
    torch.testing.assert_close(output, expected + residual if with_residual else expected)
    torch.testing.assert_close(grads[0], grad_output * keep / 0.7)
    if with_residual:
        torch.testing.assert_close(grads[1], grad_output)


def test_cpu_dropout_keeps_the_promoted_dtype_of_the_residual_stream():
    hidden = torch.randn(3, 4, dtype=torch.bfloat16, requires_grad=True)
    residual = torch.randn(3, 4, requires_grad=True)
    output = modeling_rgnet._CPUDropout.apply(hidden, residual, 0.5)
    assert output.dtype == torch.float32
    output.sum().backward()
    assert hidden.grad.dtype == torch.bfloat16 and residual.grad.dtype == torch.float32


def test_dropout_module_is_the_identity_in_eval_mode():
    dropout = modeling_rgnet.RGNetDropout(0.5).eval()
    hidden = torch.randn(3, 4, requires_grad=True)
    assert torch.equal(dropout(hidden), hidden)


def _train_step(model, inputs, labels, noise, grounding_pair_index):
    model.zero_grad()
    outputs = model(**inputs, labels=labels, selector_noise=noise, grounding_pair_index=grounding_pair_index)
    outputs.loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return outputs, grads


@pytest.mark.parametrize("batch_mode", ["cross_pairs", "paired_negative"])
def test_grounding_only_the_loss_rows_gives_the_same_loss_and_gradients(tester, batch_mode):
    config = tester.get_config(dropout=0.0, input_dropout=0.0, num_encoder_layers=2)
    num_windows = 3
    inputs = tester.cross_pairs_batch(num_windows) if batch_mode == "cross_pairs" else tester.prepare_inputs(6)
    labels = tester.prepare_labels(batch_mode, inputs)
    noise = torch.rand(
        inputs["video_mask"].shape[0], tester.num_frames + 1, generator=torch.Generator().manual_seed(3)
    )
    # cross_pairs: the positives only; paired_negative: every pair, in a shuffled order.
    index = (
        torch.arange(num_windows) * (num_windows + 1)
        if batch_mode == "cross_pairs"
        else torch.tensor([4, 0, 5, 1, 2, 3])
    )
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(config).train()

    full, full_grads = _train_step(model, inputs, labels, noise, None)
    grounded, grounded_grads = _train_step(model, inputs, labels, noise, index)

    assert grounded.logits.shape[0] == len(index) and grounded.window_logits.shape[0] == full.window_logits.shape[0]
    torch.testing.assert_close(grounded.grounding_pair_index, index)
    torch.testing.assert_close(grounded.logits, full.logits[index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.pred_spans, full.pred_spans[index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.saliency_scores, full.saliency_scores[index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.reference_anchors, full.reference_anchors[:, index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.window_logits, full.window_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.global_hidden_state, full.global_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.frame_selection, full.frame_selection)
    assert grounded.loss_dict.keys() == full.loss_dict.keys()
    for name, value in full.loss_dict.items():
        torch.testing.assert_close(grounded.loss_dict[name], value, atol=1e-5, rtol=1e-5, msg=name)
    torch.testing.assert_close(
        model.criterion.matched_slots(grounded, labels), model.criterion.matched_slots(full, labels)
    )
    assert grounded_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(grounded_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_eval_outputs_of_grounded_pairs_match_the_full_batch(tester):
    config = tester.get_config(num_encoder_layers=2)
    model = RGNetForVideoGrounding(config).eval()
    inputs = tester.prepare_inputs(5)
    index = torch.tensor([3, 1])
    with torch.no_grad():
        full = model(**inputs)
        grounded = model(**inputs, grounding_pair_index=index)
    torch.testing.assert_close(grounded.logits, full.logits[index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.saliency_scores, full.saliency_scores[index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grounded.window_logits, full.window_logits, atol=1e-5, rtol=1e-5)
    assert full.grounding_pair_index is None


def test_loss_rejects_a_grounding_index_without_the_positives(tester):
    model = RGNetForVideoGrounding(tester.get_config())
    inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", inputs)
    with pytest.raises(ValueError, match="grounding_pair_index"):
        model(**inputs, labels=labels, grounding_pair_index=torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "index",
    [
        torch.tensor([0, 0]),
        torch.tensor([4]),
        torch.tensor([-1]),
        torch.tensor([0.0]),
        torch.tensor([[0]]),
        torch.tensor([], dtype=torch.long),
    ],
)
def test_bad_grounding_index_raises(tester, index):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    with pytest.raises(ValueError, match="grounding_pair_index"):
        model(**tester.prepare_inputs(4), grounding_pair_index=index)


def test_cpu_training_kernels_under_dropout_are_reproducible_with_gradient_checkpointing(tester, monkeypatch):
    # Every attention through `_CPUDropoutAttention` and every dropout through `_CPUDropout` / `_CPUFeedForward`;
    # checkpointing replays the same random draws, so both runs must agree.
    monkeypatch.setattr(modeling_rgnet._CPUDropoutAttention, "min_map_elements", 1)
    config = tester.get_config(dropout=0.2, input_dropout=0.3, num_encoder_layers=2)
    inputs = tester.cross_pairs_batch(3)
    labels = tester.prepare_labels("cross_pairs", inputs)
    index = torch.arange(3) * 4
    model = RGNetForVideoGrounding(config).train()
    checkpointed = RGNetForVideoGrounding(config).train()
    checkpointed.load_state_dict(model.state_dict())
    checkpointed.activation_checkpointing_enable()
    results = []
    for candidate in (model, checkpointed):
        torch.manual_seed(7)
        outputs = candidate(**inputs, labels=labels, grounding_pair_index=index)
        outputs.loss.backward()
        results.append((outputs.loss.detach(), {name: p.grad for name, p in candidate.named_parameters()}))
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    assert torch.isfinite(loss)
    torch.testing.assert_close(checkpointed_loss, loss)
    for name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all(), name
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def _shared_windows(tester, num_windows):
    """A cross_pairs batch both ways: windows repeated per pair, and each window once with `video_pair_index`."""
    base = tester.prepare_inputs(num_windows)
    window = torch.arange(num_windows).repeat(num_windows)
    query = torch.arange(num_windows).repeat_interleave(num_windows)
    text = {"text_features": base["text_features"][query], "text_mask": base["text_mask"][query]}
    repeated = {"video_features": base["video_features"][window], "video_mask": base["video_mask"][window], **text}
    shared = {"video_features": base["video_features"], "video_mask": base["video_mask"], **text}
    return repeated, shared, window


def test_shared_windows_give_the_outputs_of_repeated_windows(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    repeated, shared, window = _shared_windows(tester, 3)
    with torch.no_grad():
        expected = model(**repeated)
        outputs = model(**shared, video_pair_index=window)
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores"):
        torch.testing.assert_close(outputs[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def _assert_trains_like_repeated(tester, input_dropout, repeated, shared, extra):
    """One training step on `shared` inputs (with `extra` indices) gives the loss and gradients of `repeated`."""
    config = tester.get_config(dropout=0.0, input_dropout=input_dropout)
    labels = tester.prepare_labels("cross_pairs", repeated)
    noise = torch.rand(9, tester.num_frames + 1, generator=torch.Generator().manual_seed(3))
    model = RGNetForVideoGrounding(config).train()
    results = []
    for inputs, indices in ((repeated, {}), (shared, extra)):
        model.zero_grad()
        torch.manual_seed(11)  # the same input-dropout draws: each pair still projects its own copy in training
        outputs = model(**inputs, **indices, labels=labels, selector_noise=noise)
        outputs.loss.backward()
        results.append((outputs.loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (loss, grads), (shared_loss, shared_grads) = results
    torch.testing.assert_close(shared_loss, loss, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("input_dropout", [0.0, 0.5])
def test_shared_windows_train_like_repeated_windows(tester, input_dropout):
    repeated, shared, window = _shared_windows(tester, 3)
    _assert_trains_like_repeated(tester, input_dropout, repeated, shared, {"video_pair_index": window})


@pytest.mark.parametrize("index", [torch.tensor([0, 3]), torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]])])
def test_bad_video_pair_index_raises(tester, index):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)  # two windows, two pairs
    with pytest.raises(ValueError, match="video_pair_index"):
        model(**inputs, video_pair_index=index)


def test_shared_queries_give_the_outputs_of_repeated_queries(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    repeated, shared, window = _shared_windows(tester, 3)
    base = tester.prepare_inputs(3)
    query = torch.arange(3).repeat_interleave(3)
    once = {"text_features": base["text_features"], "text_mask": base["text_mask"], "text_pair_index": query}
    with torch.no_grad():
        expected = model(**repeated)
        outputs = model(
            video_features=shared["video_features"], video_mask=shared["video_mask"], **once, video_pair_index=window
        )
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores"):
        torch.testing.assert_close(outputs[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("input_dropout", [0.0, 0.5])
def test_shared_queries_train_like_repeated_queries(tester, input_dropout):
    repeated, _, _ = _shared_windows(tester, 3)
    base = tester.prepare_inputs(3)
    shared = {**repeated, "text_features": base["text_features"], "text_mask": base["text_mask"]}
    query = torch.arange(3).repeat_interleave(3)
    _assert_trains_like_repeated(tester, input_dropout, repeated, shared, {"text_pair_index": query})


def test_text_encoder_runs_once_per_shared_query(tester):
    text_config = tiny_text_config()
    model = RGNetForVideoGrounding(tester.get_config(text_config=text_config)).eval()
    input_ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    video = tester.prepare_inputs(2)
    query = torch.tensor([0, 1, 0, 1])  # 2 queries × 2 windows
    window = torch.tensor([0, 0, 1, 1])
    rows = []
    handle = model.model.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        shared = model(
            video_features=video["video_features"],
            video_mask=video["video_mask"],
            video_pair_index=window,
            input_ids=input_ids,
            attention_mask=attention_mask,
            text_pair_index=query,
        )
        repeated = model(
            video_features=video["video_features"][window],
            video_mask=video["video_mask"][window],
            input_ids=input_ids[query],
            attention_mask=attention_mask[query],
        )
    handle.remove()
    assert rows == [2, 4]  # once per query, then once per pair
    for name in ("logits", "pred_spans", "window_logits"):
        torch.testing.assert_close(shared[name], repeated[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    "index", [torch.tensor([0, 3]), torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]]), torch.tensor([0, 1, 1])]
)
def test_bad_text_pair_index_raises(tester, index):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)  # two queries, two pairs
    with pytest.raises(ValueError, match="text_pair_index"):
        model(**inputs, text_pair_index=index)


# ---- top_k_windows: decode only each query's best windows ----


def _reference_top_windows(window_logits, pair_query_index, top_k, tolerance=1e-6):
    """Per query, in Python: every pair whose float64 score is within `tolerance` of the query's k-th best."""
    scores = torch.sigmoid(window_logits.reshape(-1).double()).tolist()
    chosen = []
    for query in set(pair_query_index.tolist()):
        pairs = [p for p, q in enumerate(pair_query_index.tolist()) if q == query]
        kth = sorted((scores[p] for p in pairs), reverse=True)[min(top_k, len(pairs)) - 1]
        chosen += [p for p in pairs if scores[p] >= kth - tolerance]
    return sorted(chosen)


def test_select_top_windows_matches_a_per_query_reference_and_covers_post_processing():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(40, 1, generator=generator) * 4
    logits[[3, 7]] = logits[11].clone()  # exact ties
    logits[20:25] = torch.tensor([[30.0], [30.0], [17.0], [17.5], [18.0]])  # equal (saturated) float32 scores
    logits[25:27] = torch.tensor([[6.0], [6.0 + 2e-6]])  # distinct logits, float32 scores one ulp apart or equal
    pair_query_index = torch.randint(0, 5, (40,), generator=generator) * 7  # interleaved, non-contiguous labels
    pair_query_index[35:] = 99  # one query with fewer windows than k
    for top_k in (1, 2, 3, 8):
        chosen = modeling_rgnet.select_top_windows(logits, pair_query_index, top_k)
        assert chosen.tolist() == _reference_top_windows(logits, pair_query_index, top_k)
        for labels in (pair_query_index.int(), pair_query_index - 10**12):  # any integer labels
            assert modeling_rgnet.select_top_windows(logits, labels, top_k).tolist() == chosen.tolist()
        for query in pair_query_index.unique():  # post-processing's kept windows (float32 scores) are all chosen
            pairs = (pair_query_index == query).nonzero().flatten()
            kept = pairs[torch.sort(torch.sigmoid(logits[pairs, 0]), descending=True, stable=True).indices[:top_k]]
            assert set(kept.tolist()) <= set(chosen.tolist())
            assert len(set(pairs.tolist()) & set(chosen.tolist())) >= min(top_k, len(pairs))


def test_top_k_windows_outputs_match_the_full_batch(tester):
    config = tester.get_config(num_encoder_layers=2)
    model = RGNetForVideoGrounding(config).eval()
    inputs = tester.prepare_inputs(9)
    pair_query_index = torch.arange(3).repeat_interleave(3)
    for name in ("text_features", "text_mask"):  # three windows per query
        inputs[name] = inputs[name][pair_query_index * 3]
    with torch.no_grad():
        full = model(**inputs)
        top = model(**inputs, top_k_windows=2, pair_query_index=pair_query_index)
        alone = model(**{key: value[:3] for key, value in inputs.items()}, top_k_windows=2)  # one query
    index = top.grounding_pair_index
    assert index.tolist() == modeling_rgnet.select_top_windows(top.window_logits, pair_query_index, 2).tolist()
    assert len(index) == 6 and alone.grounding_pair_index.tolist() == [i for i in index.tolist() if i < 3]
    torch.testing.assert_close(top.window_logits, full.window_logits, atol=1e-5, rtol=1e-5)
    for name in ("logits", "pred_spans", "saliency_scores", "encoder_last_hidden_state"):
        torch.testing.assert_close(top[name], full[name][index], atol=1e-5, rtol=1e-5, msg=name)
    for name in ("frame_selection", "global_hidden_state"):
        assert top[name].shape[0] == 9


def test_top_k_windows_takes_the_queries_from_text_pair_index(tester):
    """Each query's text held once (`share_queries`): `text_pair_index` names each pair's query, so the best windows
    are chosen per query without `pair_query_index`."""
    model = RGNetForVideoGrounding(tester.get_config(num_encoder_layers=2)).eval()
    inputs = tester.prepare_inputs(9)
    query = torch.arange(3).repeat_interleave(3)
    shared = {**inputs, "text_features": inputs["text_features"][::3], "text_mask": inputs["text_mask"][::3]}
    inputs.update(text_features=shared["text_features"][query], text_mask=shared["text_mask"][query])
    with torch.no_grad():
        expected = model(**inputs, top_k_windows=1, pair_query_index=query)
        outputs = model(**shared, text_pair_index=query, top_k_windows=1)
    assert outputs.grounding_pair_index.tolist() == expected.grounding_pair_index.tolist()
    assert len(outputs.grounding_pair_index) == 3  # one per query, not one for all
    with pytest.raises(ValueError, match="text_pair_index"):  # a bad index is named as the caller passed it
        model(**shared, text_pair_index=query.int(), top_k_windows=1)


def test_top_k_windows_rejects_bad_arguments(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(4)
    cases = [
        ({"top_k_windows": 0}, "top_k_windows"),
        ({"top_k_windows": 2.0}, "top_k_windows"),
        ({"top_k_windows": 2, "pair_query_index": torch.zeros(3, dtype=torch.long)}, "pair_query_index"),
        ({"top_k_windows": 2, "pair_query_index": torch.zeros(4)}, "pair_query_index"),
        ({"pair_query_index": torch.zeros(4, dtype=torch.long)}, "only used with `top_k_windows`"),
        ({"top_k_windows": 2, "grounding_pair_index": torch.tensor([0])}, "for inference"),
    ]
    for extra, match in cases:
        with pytest.raises(ValueError, match=match):
            model(**inputs, **extra)
    training_inputs = tester.cross_pairs_batch(2)
    labels = tester.prepare_labels("cross_pairs", training_inputs)
    with pytest.raises(ValueError, match="for inference"):
        model(**training_inputs, labels=labels, top_k_windows=1)
    # Pairs of different texts without the query of each pair: several queries, not one.
    with pytest.raises(ValueError, match="pairs of different queries needs `pair_query_index`"):
        model(**inputs, top_k_windows=2)
    ids = torch.tensor([[1, 5, 6, 2], [1, 8, 2, 0]])
    with_text = RGNetForVideoGrounding(tester.get_config(text_config=tiny_text_config())).eval()
    video = {key: inputs[key][:2] for key in ("video_features", "video_mask")}
    with pytest.raises(ValueError, match="pairs of different queries"):
        with_text(**video, input_ids=ids, top_k_windows=1)
    with torch.no_grad():  # the same query in every pair is one query
        assert len(with_text(**video, input_ids=ids[[0, 0]], top_k_windows=1).grounding_pair_index) == 1
    # The processor's numpy query index is taken as it is; NaN text is reported as such, not as several queries.
    with torch.no_grad():
        numpy_index = model(**inputs, top_k_windows=1, pair_query_index=np.arange(4))
    assert numpy_index.grounding_pair_index.tolist() == [0, 1, 2, 3]
    same_text = {**inputs, "text_features": inputs["text_features"][[0, 0, 0, 0]].clone()}
    same_text["text_mask"] = inputs["text_mask"][[0, 0, 0, 0]]
    same_text["text_features"][2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="`text_features` contains NaN"):
        model(**same_text, top_k_windows=1)


class _DeviceReads(TorchDispatchMode):
    """Counts the operators that read tensor values back to the host (on a GPU, each waits for the device)."""

    READS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "equal", "is_nonzero"}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._opname in self.READS:
            self.reads.append(func._opname)
        return func(*args, **(kwargs or {}))


def _count_device_reads(monkeypatch, run):
    """Reads of one call of `run`: the operators above plus `Tensor.tolist` (on the CPU it reads without an operator)."""
    counter = _DeviceReads()
    tolist = torch.Tensor.tolist

    def counted_tolist(self):
        counter.reads.append("tolist")
        return tolist(self)

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "tolist", counted_tolist)
        with counter, torch.no_grad():
            run()
    return counter.reads


def test_a_forward_reads_the_device_once_for_its_checks_and_twice_more_for_top_windows(tester, monkeypatch):
    """Long-video inference (each window and query once, top windows grounded) reads the device three times: the
    input checks' flags, the chosen pairs (their number depends on the scores) and that choice's check. A plain
    forward, or one given `grounding_pair_index`, reads once. Reads stall the host on a GPU, so they are kept few."""
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(4)
    query = torch.arange(2).repeat_interleave(4)
    shared = {**inputs, "text_features": inputs["text_features"][:2], "text_mask": inputs["text_mask"][:2]}
    windows = torch.arange(4).repeat(2)
    long_video = {**shared, "video_pair_index": windows, "text_pair_index": query, "top_k_windows": 2}
    reads = _count_device_reads(monkeypatch, lambda: model(**long_video))
    assert reads == ["tolist", "nonzero", "_local_scalar_dense"], reads
    assert _count_device_reads(monkeypatch, lambda: model(**inputs)) == ["tolist"]
    grounded = {**inputs, "grounding_pair_index": torch.tensor([0, 2])}
    assert _count_device_reads(monkeypatch, lambda: model(**grounded)) == ["tolist"]


def test_bad_index_values_are_named_after_the_one_device_read(tester):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(2)
    shared = {**inputs, "text_features": inputs["text_features"][:1], "text_mask": inputs["text_mask"][:1]}
    with pytest.raises(ValueError, match="`video_pair_index` must be a 1-D int64 tensor of indices in \\[0, 2\\)"):
        model(**inputs, video_pair_index=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="`text_pair_index` must be a 1-D int64 tensor of 2 pairs of indices in"):
        model(**shared, text_pair_index=torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="distinct pair indices in \\[0, 2\\)"):
        model(**inputs, grounding_pair_index=torch.tensor([1, 1]))
    with torch.no_grad():  # in range: accepted
        model(**shared, video_pair_index=torch.tensor([1, 0]), text_pair_index=torch.tensor([0, 0]))


def _selector_case(num_pairs, num_padded, mode, dtype, seed=0, heads=2, head_dim=8, length=10):
    """Projected `(N, S, H·d)` inputs, a gate selecting about half the frames and `num_padded` padded windows."""
    generator = torch.Generator().manual_seed(seed)
    query, key, value = (
        (2 * torch.randn(num_pairs, length, heads * head_dim, generator=generator)).to(dtype) for _ in "qkv"
    )
    valid = torch.ones(num_pairs, length)
    for pair in range(num_padded):
        valid[num_pairs - 1 - pair, length - 2 - pair :] = 0
    gate = (torch.rand(num_pairs, length, generator=generator) < 0.5).float()
    return query, key, value, modeling_rgnet.RGNetSelectorMask(gate, valid, mode)


def _biased_reference(query, key, value, bias, heads):
    """Float64 attention under a written-out bias, `(N, Lq, H·d)`."""
    split = [tensor.double().unflatten(-1, (heads, -1)).transpose(1, 2) for tensor in (query, key, value)]
    scores = split[0] @ split[1].transpose(-1, -2) / split[0].shape[-1] ** 0.5 + bias.double()
    return (scores.softmax(-1) @ split[2]).transpose(1, 2).flatten(2)


@pytest.mark.parametrize("mode", ["additive_unit_bias", "hard_mask"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("num_padded", [0, 1, 3, 5])  # of six: padded ones computed again up to half, then all
@pytest.mark.parametrize("global_only", [False, True])
def test_selector_attention_equals_attention_under_the_written_out_bias(
    mode, dtype, tolerance, num_padded, global_only, monkeypatch
):
    calls = []
    fused = modeling_rgnet._attention_with_logsumexp
    monkeypatch.setattr(modeling_rgnet, "_attention_with_logsumexp", lambda *a: calls.append(1) or fused(*a))
    query, key, value, mask = _selector_case(6, num_padded, mode, dtype)
    assert mask.penalised_rows.any() and len(mask.padded_pairs) == num_padded
    if global_only:  # the same derived rows and pairs, not found again (nor copied: `torch.compile` of PyTorch 2.11
        # breaks its graph at `copy.copy`)
        with monkeypatch.context() as patch:
            patch.setattr(copy, "copy", lambda *a: pytest.fail("copy.copy"))
            row = mask.global_row()
        assert row.penalised_rows is mask.penalised_rows and row.padded_pairs is mask.padded_pairs
        mask, query = row, query[:, :1]
    output = modeling_rgnet.selector_attention(query, key, value, mask, num_heads=2)
    expected = _biased_reference(query, key, value, mask.bias(torch.float64), heads=2)
    assert output.dtype == dtype and output.shape == expected.shape
    torch.testing.assert_close(output.double(), expected, atol=tolerance, rtol=tolerance)
    assert len(calls) == (num_padded <= 3)  # the fused kernel unless more than half the pairs are padded
    unpadded = 6 - num_padded
    if num_padded == 1:  # the padded window's keys are excluded: changing them changes nothing
        noisy_key, noisy_value = key.clone(), value.clone()
        noisy_key[-1, -2:], noisy_value[-1, -2:] = 100.0, 100.0
        again = modeling_rgnet.selector_attention(query, noisy_key, noisy_value, mask, num_heads=2)
        torch.testing.assert_close(again[:unpadded], output[:unpadded], atol=0, rtol=0)
        torch.testing.assert_close(again[-1, : 1 if global_only else -2], output[-1, : 1 if global_only else -2])


def test_selector_attention_in_bfloat16_stays_near_the_biased_kernel():
    """Peaky own logits (keys correlated with queries): the correction amplifies the kernel's rounded output by up to
    e, so bfloat16 errors are about three times the biased kernel's, not more (the own logits are exact)."""
    for seed in range(3):
        query, key, value, mask = _selector_case(6, 1, "additive_unit_bias", torch.bfloat16, seed, 4, 32, 60)
        key = (key.float() + query.float()).bfloat16()
        expected = _biased_reference(query, key, value, mask.bias(torch.float64), heads=4)
        factored = modeling_rgnet.selector_attention(query, key, value, mask, num_heads=4).double()
        biased = modeling_rgnet.multi_head_attention(query, key, value, mask.bias(torch.bfloat16), 4, 0.0).double()
        factored_error, biased_error = (factored - expected).abs().max(), (biased - expected).abs().max()
        assert factored_error < 5 * biased_error, (seed, factored_error, biased_error)


def test_selector_attention_respects_the_backend_switches(monkeypatch):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    query, key, value, mask = _selector_case(6, 1, "additive_unit_bias", torch.float32)
    split = [tensor.unflatten(-1, (2, -1)).transpose(1, 2) for tensor in (query, key, value)]
    assert modeling_rgnet.logsumexp_attention_kernel(*split) == "cpu_flash"
    assert modeling_rgnet.logsumexp_attention_kernel(*(x.double() for x in split)) is None
    calls = []
    fused = modeling_rgnet._attention_with_logsumexp
    monkeypatch.setattr(modeling_rgnet, "_attention_with_logsumexp", lambda *a: calls.append(fused(*a)) or calls[-1])
    with sdpa_kernel([SDPBackend.MATH]):  # no fused kernel allowed: the written-out bias
        output = modeling_rgnet.selector_attention(query, key, value, mask, num_heads=2)
    assert calls == [None]
    expected = _biased_reference(query, key, value, mask.bias(torch.float64), heads=2)
    torch.testing.assert_close(output.double(), expected, atol=1e-5, rtol=1e-5)


def test_selector_mask_selects_pairs_and_the_global_row():
    _, _, _, mask = _selector_case(6, 1, "additive_unit_bias", torch.float32)
    index = torch.tensor([5, 0, 2])
    subset = mask.pairs(index)
    torch.testing.assert_close(subset.bias(torch.float32), mask.bias(torch.float32)[index])
    assert subset.padded_pairs.tolist() == [0] and not subset.global_only
    row = subset.global_row()
    torch.testing.assert_close(row.bias(torch.float32), mask.bias(torch.float32)[index][:, :, :1])
    assert not row.penalised_rows[:, 0].any()  # the global token counts as selected
    assert row.padded_pairs is subset.padded_pairs and subset.to("cpu") is subset
    with pytest.raises(ValueError, match="selector_attention_mode"):
        modeling_rgnet.RGNetSelectorMask(mask.frame_gate, mask.sequence_mask, "soft")
    # Either derived part may be given (the model passes the padded pairs it read at the start of its forward).
    given = modeling_rgnet.RGNetSelectorMask(
        mask.frame_gate, mask.sequence_mask, mask.mode, padded_pairs=mask.padded_pairs
    )
    assert given.padded_pairs is mask.padded_pairs and torch.equal(given.penalised_rows, mask.penalised_rows)
    given = modeling_rgnet.RGNetSelectorMask(
        mask.frame_gate, mask.sequence_mask, mask.mode, False, mask.penalised_rows
    )
    assert given.penalised_rows is mask.penalised_rows and torch.equal(given.padded_pairs, mask.padded_pairs)


def test_pairs_with_padded_frames_per_pair_and_through_a_pair_index():
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    mask[3, 5:] = 0
    assert modeling_rgnet.pairs_with_padded_frames(mask).tolist() == [1, 3]
    pair_index = torch.tensor([3, 0, 1, 1, 2])  # pairs reading shared windows
    assert modeling_rgnet.pairs_with_padded_frames(mask, pair_index).tolist() == [0, 2, 3]
    assert modeling_rgnet.pairs_with_padded_frames(mask.bool()).tolist() == [1, 3]
    assert modeling_rgnet.pairs_with_padded_frames(torch.ones(3, 5)).tolist() == []


def _pairwise_varlen_attention(query, key, value, query_offsets, key_offsets, max_q, max_k, dropout, causal, debug):
    """The function of CUDA's variable-length flash kernel (`(total, H, d)` rows, pair `b` owning rows
    `offsets[b]:offsets[b + 1]`), pair by pair: PyTorch has no CPU kernel for it."""
    assert (
        dropout == 0
        and not causal
        and max_q >= int(query_offsets.diff().max())
        and max_k >= int(key_offsets.diff().max())
    )
    assert query_offsets.dtype == key_offsets.dtype == torch.int32
    rows = []
    for pair in range(len(query_offsets) - 1):
        q, k, v = (
            x[offsets[pair] : offsets[pair + 1]].transpose(0, 1)
            for x, offsets in ((query, query_offsets), (key, key_offsets), (value, key_offsets))
        )
        rows.append(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(0, 1))
    return (torch.cat(rows),)


def test_packed_text_attention_attends_to_each_pairs_real_keys(monkeypatch):
    """`key_padding_attention`'s packed form gives the padding bias's result (masks with holes too); on the CPU the
    bias runs, without trying the packed kernel. The model allows packing in eval mode only."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(5, 7, 16, generator=generator)
    key, value = torch.randn(2, 5, 6, 16, generator=generator)
    key_mask = (torch.rand(5, 6, generator=generator) < 0.6).float()
    key_mask[:, 2] = 1  # every pair has a real key; some have padding before it
    mask = modeling_rgnet.RGNetKeyPaddingMask(key_mask)
    expected = modeling_rgnet.multi_head_attention(query, key, value, mask.bias(torch.float32), 2, 0.0)

    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", _pairwise_varlen_attention)
    monkeypatch.setattr(modeling_rgnet, "logsumexp_attention_kernel", lambda *inputs: "flash")
    packed = modeling_rgnet._packed_key_attention(query, key, value, mask, 2)
    torch.testing.assert_close(packed, expected, atol=1e-6, rtol=1e-6)
    assert mask.packed_keys() is mask.packed_keys()  # packed once for every layer
    index, offsets = mask.packed_keys()
    assert torch.equal(offsets, torch.nn.functional.pad(key_mask.sum(1).cumsum(0), (1, 0)).int())
    moved = mask.to("meta")  # another device: the keys read go along (the layers there do not read them again)
    assert mask.to("cpu") is mask and moved.key_mask.is_meta and moved.packed == mask.packed
    assert [tensor.is_meta for tensor in moved._packed_keys] == [True, True]
    assert [tensor.shape for tensor in moved._packed_keys] == [index.shape, offsets.shape]
    monkeypatch.setattr(modeling_rgnet, "logsumexp_attention_kernel", lambda *inputs: "efficient")
    assert modeling_rgnet._packed_key_attention(query, key, value, mask, 2) is None  # no flash kernel: no packing

    calls = []
    monkeypatch.setattr(modeling_rgnet, "_packed_key_attention", lambda *args: calls.append(1))
    with torch.no_grad():
        on_cpu = modeling_rgnet.key_padding_attention(query, key, value, mask, 2, 0.0)
    torch.testing.assert_close(on_cpu, expected)
    assert not calls  # CPU inputs: the biased kernel, without asking

    allowed = []
    attention = modeling_rgnet.key_padding_attention
    monkeypatch.setattr(
        modeling_rgnet, "key_padding_attention", lambda *args: allowed.append(args[3].packed) or attention(*args)
    )
    tester = RGNetModelTester()
    model = RGNetForVideoGrounding(tester.get_config())
    inputs = tester.prepare_inputs(3)
    with torch.no_grad():
        model.train()(**inputs)
        model.eval()(**inputs)
        model.model.packed_text_attention = False
        model(**inputs)
    assert allowed == [False, True, False]  # training mode, eval mode, turned off


@pytest.mark.parametrize("mode", ["additive_unit_bias", "hard_mask"])
def test_inference_runs_the_factored_selector_attention(mode, monkeypatch):
    calls = []
    fused = modeling_rgnet._attention_with_logsumexp
    monkeypatch.setattr(modeling_rgnet, "_attention_with_logsumexp", lambda *a: calls.append(1) or fused(*a))
    tester = RGNetModelTester(num_frames=40)  # windows longer than the hidden size (32), as in MAD
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config(num_encoder_layers=2, selector_attention_mode=mode)).eval()
    torch.nn.init.zeros_(model.model.frame_selector.dense.bias)  # about half the frames selected
    inputs = tester.prepare_inputs(9)
    inputs["video_mask"][:-1] = 1.0  # full windows but the last (a video's end): the factored form runs
    assert inputs["video_mask"][-1].sum() < tester.num_frames
    inputs["video_features"][:-1] = torch.randn_like(inputs["video_features"][:-1])
    top_k = {"top_k_windows": 2, "pair_query_index": torch.arange(3).repeat_interleave(3)}
    with torch.no_grad():
        factored, factored_top = model(**inputs), model(**inputs, **top_k)
        model.model.factored_selector_attention = False
        biased, biased_top = model(**inputs), model(**inputs, **top_k)
    # Both layers over all pairs; with top_k_windows, layer 1, then layer 2's global rows and its chosen pairs.
    assert len(calls) == 2 + 3
    selected = factored.frame_selection[:-1]
    assert 0 < selected.mean() < 1
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores", "encoder_last_hidden_state"):
        torch.testing.assert_close(factored[name], biased[name], atol=1e-5, rtol=1e-5, msg=name)
        torch.testing.assert_close(factored_top[name], biased_top[name], atol=1e-5, rtol=1e-5, msg=name)
    # Pairs given with a padded window among them: the last layer's subset computes that pair under its bias.
    grounded = torch.tensor([8, 1, 4])
    with torch.no_grad():
        biased_grounded = model(**inputs, grounding_pair_index=grounded)
        model.model.factored_selector_attention = True
        factored_grounded = model(**inputs, grounding_pair_index=grounded)
    assert len(calls) == 5 + 3  # layer 1; layer 2's global rows and its given pairs
    for name in ("logits", "pred_spans", "window_logits", "encoder_last_hidden_state"):
        torch.testing.assert_close(factored_grounded[name], biased_grounded[name], atol=1e-5, rtol=1e-5, msg=name)
    model(**inputs)  # gradients enabled: the written-out bias
    model.train()
    with torch.no_grad():  # training mode (attention dropout) without gradients: the written-out bias too
        model(**inputs)
    assert len(calls) == 8


def test_cpu_inference_linear_is_onednns_linear_for_float32_inference_only(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    linear = modeling_rgnet.RGNetXavierLinear(16, 24)
    hidden = torch.randn(3, 5, 16, generator=generator)
    expected = torch.nn.functional.linear(hidden, linear.weight, linear.bias)
    with torch.no_grad():
        fused = modeling_rgnet.cpu_inference_linear(hidden, linear.weight, linear.bias)
        fused_relu = modeling_rgnet.cpu_inference_linear(hidden, linear.weight, linear.bias, "relu")
        assert fused is not None and fused.shape == (3, 5, 24)
        torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused_relu, expected.relu(), atol=1e-5, rtol=1e-5)
        assert modeling_rgnet.cpu_inference_linear(hidden.double(), linear.weight.double(), None) is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert modeling_rgnet.cpu_inference_linear(hidden, linear.weight, linear.bias) is None
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.backends.mkldnn, "enabled", False)
            assert modeling_rgnet.cpu_inference_linear(hidden, linear.weight, linear.bias) is None
        assert torch.backends.mkldnn.enabled
    assert modeling_rgnet.cpu_inference_linear(hidden, linear.weight, linear.bias) is None  # weights need gradients
    with torch.no_grad():
        on_meta = modeling_rgnet.RGNetXavierLinear(16, 24).to("meta")  # weights elsewhere: PyTorch's own error
        assert modeling_rgnet.cpu_inference_linear(hidden, on_meta.weight, on_meta.bias) is None
        with pytest.raises(RuntimeError):
            on_meta(hidden)
        with pytest.MonkeyPatch.context() as patch:  # under torch.compile the compiler fuses linear layers itself
            patch.setattr(torch.compiler, "is_compiling", lambda: True)
            assert modeling_rgnet.cpu_inference_linear(hidden, linear.weight, linear.bias) is None
    calls = []
    original = modeling_rgnet.cpu_inference_linear
    monkeypatch.setattr(modeling_rgnet, "cpu_inference_linear", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        torch.testing.assert_close(linear(hidden), expected, atol=1e-5, rtol=1e-5)
    assert calls == [1]


class _HostReadsAndProducts(_DeviceReads):
    """Records, in order, the operators that read the device on the host (`"read"`, [`_DeviceReads`]' operators) and
    the matrix products (`"product"`), each run of one kind once."""

    PRODUCTS = {"mm", "addmm", "bmm", "_addmm_activation"}

    def __init__(self):
        super().__init__()
        self.events = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = "read" if func._opname in self.READS else "product" if func._opname in self.PRODUCTS else None
        if kind and (not self.events or self.events[-1] != kind):
            self.events.append(kind)
        return func(*args, **(kwargs or {}))


def test_top_window_inference_reads_the_device_only_before_the_layers_and_at_the_choice(tester, monkeypatch):
    """On an accelerator every host read waits for the queued work, and the device then idles until the host has
    queued more: top-window inference reads at the start of its forward (the packed text keys, the pairs with
    padded keys of the factored selector attention) and where it chooses the windows (the choice, its check, the
    chosen pairs' padding), never between the layers."""
    # The packed text keys are read where CUDA's kernel would run; here the attention then takes the bias.
    monkeypatch.setattr(modeling_rgnet.RGNetKeyPaddingMask, "may_pack", lambda self, dtype: True)
    config = tester.get_config(hidden_size=8, num_attention_heads=2, num_encoder_layers=2)  # 13 tokens > 8: factored
    model = RGNetForVideoGrounding(config).eval()
    inputs = tester.prepare_inputs(9, config)
    inputs["video_mask"][:] = 1
    inputs["video_mask"][[2, 7], -3:] = 0  # pairs with padded keys, in the factored attention and at the choice
    selector_masks = []
    original = modeling_rgnet.RGNetSelectorMask.__post_init__
    monkeypatch.setattr(
        modeling_rgnet.RGNetSelectorMask, "__post_init__", lambda self: selector_masks.append(self) or original(self)
    )
    packed = []
    packed_keys = modeling_rgnet.RGNetKeyPaddingMask.packed_keys
    monkeypatch.setattr(
        modeling_rgnet.RGNetKeyPaddingMask, "packed_keys", lambda self: packed.append(1) or packed_keys(self)
    )
    with torch.no_grad(), _HostReadsAndProducts() as log:
        outputs = model(**inputs, top_k_windows=2, pair_query_index=torch.arange(3).repeat_interleave(3))
    assert log.events == ["read", "product", "read", "product"]
    assert packed == [1] and selector_masks[0].padded_pairs.tolist() == [2, 7]
    assert len(outputs.grounding_pair_index) == 6


def test_host_layout_is_read_only_where_a_fast_path_needs_it(tester, monkeypatch):
    """The start-of-forward host reads (`_read_host_layout`, an eager step under `torch.compile`) run only for
    inference that packs the text keys or factors the selector attention: not in training, not for windows no longer
    than the hidden size."""
    calls = []
    read = modeling_rgnet._read_host_layout
    monkeypatch.setattr(modeling_rgnet, "_read_host_layout", lambda *a: calls.append(a) or read(*a))
    inputs = tester.prepare_inputs(4)
    long_windows = RGNetForVideoGrounding(tester.get_config(hidden_size=8, num_attention_heads=2))  # 13 tokens > 8
    short_windows = RGNetForVideoGrounding(tester.get_config())  # 13 tokens, hidden size 32
    long_windows.train()(**inputs)
    with torch.no_grad():
        short_windows.eval()(**inputs)
    assert calls == []
    with torch.no_grad():
        long_windows.eval()(**inputs)
    ((text_bias, _, _, factored),) = calls
    assert text_bias is None and factored  # no packing on the CPU
