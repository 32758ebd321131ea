"""The model on every available device: CPU always, CUDA when present (a GPU machine runs the CUDA cases).

On CPU the training cases go through the CPU kernels (`_CPUDropoutAttention`, `_CPUDropout`, `_CPUFeedForward` with
`_CPUKeepMasks`); on CUDA through `scaled_dot_product_attention` with dropout and PyTorch's dropout. Compiled
(`torch.compile`), both take PyTorch's operators, and the compiled model must match the eager one.
"""

import pytest
import torch

import modeling_rgnet
import processing_rgnet
from configuration_rgnet import RGNetConfig
from data_rgnet import load_rgnet_dataset
from modeling_rgnet import RGNetForVideoGrounding
from processing_rgnet import RGNetProcessor, copy_to_device
from tests.test_modeling_rgnet import RGNetModelTester
from tests.tiny_data import TINY_CONFIG, build_tiny_dataset
from training_rgnet import predict_long_videos

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _restore_global_rng():
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        yield


@pytest.fixture(autouse=True)
def _cpu_kernels_for_every_map(monkeypatch):
    # The tiny maps would otherwise stay on PyTorch's kernel on CPU.
    monkeypatch.setattr(modeling_rgnet._CPUDropoutAttention, "min_map_elements", 1)


@pytest.fixture
def tester():
    return RGNetModelTester()


def to_device(batch, device):
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def training_batch(tester, num_windows=3):
    inputs = tester.cross_pairs_batch(num_windows)
    labels = tester.prepare_labels("cross_pairs", inputs)
    noise = torch.rand(num_windows**2, tester.num_frames + 1, generator=torch.Generator().manual_seed(5))
    return inputs, labels, noise


@pytest.mark.parametrize("device", DEVICES)
def test_eval_outputs_match_the_cpu_reference(tester, device):
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(5)
    with torch.no_grad():
        reference = model(**inputs)
        outputs = model.to(device)(**to_device(inputs, device))
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores"):
        torch.testing.assert_close(getattr(outputs, name).cpu(), getattr(reference, name), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_window_inference_matches_the_cpu_reference(tester, device):
    """Each query's best windows are chosen on the device (float64 scores) and the same pairs as on the CPU."""
    model = RGNetForVideoGrounding(tester.get_config(num_encoder_layers=2)).eval()
    inputs = tester.prepare_inputs(12)
    pair_query_index = torch.arange(3).repeat_interleave(4)
    with torch.no_grad():
        reference = model(**inputs, top_k_windows=2, pair_query_index=pair_query_index)
        outputs = model.to(device)(
            **to_device(inputs, device), top_k_windows=2, pair_query_index=pair_query_index.to(device)
        )
    assert outputs.grounding_pair_index.device.type == device
    assert torch.equal(outputs.grounding_pair_index.cpu(), reference.grounding_pair_index)
    for name in ("logits", "pred_spans", "window_logits"):
        torch.testing.assert_close(getattr(outputs, name).cpu(), getattr(reference, name), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_without_dropout_match_the_cpu_reference(tester, device):
    config = tester.get_config(dropout=0.0, input_dropout=0.0)
    inputs, labels, noise = training_batch(tester)
    model = RGNetForVideoGrounding(config).train()
    on_device = RGNetForVideoGrounding(config).train()
    on_device.load_state_dict(model.state_dict())
    on_device.to(device)
    model(**inputs, labels=labels, selector_noise=noise).loss.backward()
    on_device(
        **to_device(inputs, device), labels=to_device(labels, device), selector_noise=noise.to(device)
    ).loss.backward()
    for (name, param), other in zip(model.named_parameters(), on_device.parameters(), strict=True):
        if param.grad is None:
            assert other.grad is None, name
            continue
        torch.testing.assert_close(
            other.grad.cpu(), param.grad, atol=1e-4, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}"
        )


# bf16 autocast on CPU is covered (more cheaply) by test_modeling_rgnet.py.
@pytest.mark.parametrize(
    ("device", "precision"), [(device, "fp32") for device in DEVICES] + [("cuda", "bf16")] * ("cuda" in DEVICES)
)
def test_training_with_dropout_fits_one_batch(tester, device, precision):
    """Dropout on (attention, residual, feed-forward, input): the loss still falls on a repeated batch."""
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(tester.get_config(dropout=0.1, input_dropout=0.1)).to(device).train()
    inputs, labels, noise = training_batch(tester)
    inputs, labels, noise = to_device(inputs, device), to_device(labels, device), noise.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**inputs, labels=labels, selector_noise=noise).loss
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses  # about 0.5 on CPU


@pytest.mark.parametrize("device", DEVICES)
def test_post_processing_with_the_video_on_the_device_matches_the_cpu(device):
    """The matching score's frame-query product runs where the video is; float64 accumulation keeps every ranking
    the same as on the CPU."""
    generator = torch.Generator().manual_seed(3)
    processor = RGNetProcessor(max_window_frames=20, window_stride=10, top_k_windows=4, max_predictions=10)
    video = torch.randn(95, 8, generator=generator)
    batch = processor(video_features=video, text_features=[torch.randn(4, 6, generator=generator) for _ in range(3)])
    num_pairs = batch.window_metadata.num_pairs
    outputs = {
        "logits": torch.randn(num_pairs, 5, 2, generator=generator),
        "pred_spans": 0.1 + 0.5 * torch.rand(num_pairs, 5, 2, generator=generator),
        "window_logits": torch.randn(num_pairs, 1, generator=generator),
    }
    sentences = torch.randn(3, 8, generator=generator)
    metadata = batch.window_metadata
    reference = processor.post_process_video_grounding(
        outputs, metadata, video_features=video, sentence_embeddings=sentences
    )
    on_device = processor.post_process_video_grounding(
        to_device(outputs, device), metadata, video_features=video.to(device), sentence_embeddings=sentences
    )
    for expected, result in zip(reference, on_device, strict=True):
        for name in ("predictions", "prediction_sources", "window_ranking"):
            assert torch.equal(result[name], expected[name]), name


@pytest.mark.parametrize("device", DEVICES)
def test_windows_cut_on_the_device_match_the_cpu(device):
    video = torch.randn(95, 8, generator=torch.Generator().manual_seed(4))
    processor = RGNetProcessor(max_window_frames=20, window_stride=10)
    expected = processor.cut_windows(video)
    cut = processor.cut_windows(video.to(device), device=device)
    assert cut.windows.device.type == cut.window_mask.device.type == torch.device(device).type
    assert torch.equal(cut.windows.cpu(), expected.windows)
    assert torch.equal(cut.window_mask.cpu(), expected.window_mask)


@pytest.mark.parametrize("device", DEVICES)
def test_large_copies_between_the_host_and_the_device_keep_their_values(device, monkeypatch):
    """`copy_to_device` stages copies of `PINNED_COPY_MIN_BYTES` (here 1 kB) to `PINNED_COPY_MAX_BYTES` between the
    host and CUDA in page-locked memory: the source may change as soon as an upload returns, the device's next work
    reads it finished, and a copy back is complete (and page-locked) on return. Elsewhere it is `.to`."""
    monkeypatch.setattr(processing_rgnet, "PINNED_COPY_MIN_BYTES", 1024)
    frames = torch.randn(4096, 16, generator=torch.Generator().manual_seed(6))  # 256 kB
    expected = frames.clone()
    uploaded = copy_to_device(frames, device)
    if device != "cpu":  # (on the CPU, `.to` returns the tensor itself)
        frames.zero_()
    doubled = uploaded * 2  # queued behind the upload on the same stream
    back = copy_to_device(doubled, "cpu")
    assert uploaded.device.type == torch.device(device).type and back.device.type == "cpu"
    assert torch.equal(back, expected * 2)
    assert back.is_pinned() == (device == "cuda")
    cut = RGNetProcessor(max_window_frames=512, window_stride=256).cut_windows(expected.numpy(), device=device)
    start = int(cut.window_offsets[1])
    assert torch.equal(copy_to_device(cut.windows, "cpu")[1, :10], expected[start : start + 10])
    small = copy_to_device(copy_to_device(torch.ones(16), device), "cpu")  # 64 bytes: plain `.to`
    assert torch.equal(small, torch.ones(16)) and not small.is_pinned()
    monkeypatch.setattr(processing_rgnet, "PINNED_COPY_MAX_BYTES", 128 * 1024)  # 256 kB: too large, plain `.to`
    assert not copy_to_device(uploaded, "cpu").is_pinned()


@pytest.mark.parametrize("device", DEVICES)
def test_long_video_inference_on_the_device_matches_the_cpu(device, tmp_path):
    """`predict_long_videos` with the model on the device (windows sent once per video; on an accelerator,
    post-processing on a worker thread beside the next forward) ranks the windows like the CPU run and predicts the
    same spans (an untrained head's near-tied proposals may come in another order)."""
    queries, store = load_rgnet_dataset(build_tiny_dataset(tmp_path / "tiny"))
    torch.manual_seed(0)
    config = RGNetConfig(**{**TINY_CONFIG, "query_normalization": "ego4d", "top_k_windows": 2})
    model = RGNetForVideoGrounding(config).eval()
    processor = RGNetProcessor.from_config(config)
    validation = queries["validation"]
    reference = predict_long_videos(model, processor, validation, store, pairs_per_batch=17, progress=False)
    predicted = predict_long_videos(model.to(device), processor, validation, store, pairs_per_batch=17, progress=False)
    for item, expected in zip(predicted, reference, strict=True):
        assert item["window_ranking"] == expected["window_ranking"]
        spans, expected_spans = torch.tensor(item["predictions"])[:, :2], torch.tensor(expected["predictions"])[:, :2]
        assert len(spans) == len(expected_spans)
        assert torch.cdist(spans, expected_spans, p=float("inf")).min(dim=1).values.max() < 2e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("mode", ["additive_unit_bias", "hard_mask"])
@pytest.mark.parametrize(("num_padded", "global_only"), [(1, False), (1, True), (6, False)])
def test_factored_selector_attention_on_the_device(
    device, dtype, tolerance, mode, num_padded, global_only, monkeypatch
):
    """The bias-free form runs the device's fused kernel that returns the log-sum-exp (flash for bf16 on CUDA,
    memory-efficient for fp32; head width 32 as in the presets), for every row or the global row alone, and equals
    attention under the written-out bias; with most pairs padded, the biased kernel runs instead."""
    from tests.test_modeling_rgnet_fast_paths import _biased_reference, _selector_case

    results = []
    fused = modeling_rgnet._attention_with_logsumexp
    monkeypatch.setattr(
        modeling_rgnet, "_attention_with_logsumexp", lambda *a: results.append(fused(*a)) or results[-1]
    )
    query, key, value, mask = _selector_case(8, num_padded, mode, dtype, heads=2, head_dim=32, length=40)
    if global_only:
        mask, query = mask.global_row(), query[:, :1]
    expected = _biased_reference(query, key, value, mask.bias(torch.float64), heads=2)
    mask = modeling_rgnet.RGNetSelectorMask(mask.frame_gate, mask.sequence_mask, mode, global_only).to(device)
    output = modeling_rgnet.selector_attention(query.to(device), key.to(device), value.to(device), mask, num_heads=2)
    if num_padded * 2 > 8:
        assert not results  # the biased kernel for all
    else:
        assert len(results) == 1 and results[0] is not None  # the fused kernel ran
    assert output.dtype == dtype and output.device.type == device
    torch.testing.assert_close(output.cpu().double(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("head_dim", [4, 12])
def test_factored_selector_attention_with_head_widths_off_the_flash_kernels_multiple(
    device, dtype, tolerance, head_dim
):
    """Head widths that are not a multiple of 8 (CUDA's flash kernel, called directly, rejects them where
    `scaled_dot_product_attention` would pad them): another kernel, or the biased form, computes the same function."""
    from tests.test_modeling_rgnet_fast_paths import _biased_reference, _selector_case

    query, key, value, mask = _selector_case(8, 1, "additive_unit_bias", dtype, heads=2, head_dim=head_dim, length=40)
    expected = _biased_reference(query, key, value, mask.bias(torch.float64), heads=2)
    output = modeling_rgnet.selector_attention(
        query.to(device), key.to(device), value.to(device), mask.to(device), num_heads=2
    )
    assert output.dtype == dtype and output.device.type == device
    torch.testing.assert_close(output.cpu().double(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("head_dim", [32, 12])
def test_packed_text_attention_on_the_device(device, dtype, tolerance, head_dim, monkeypatch):
    """The text-to-video attention over each pair's real tokens: on CUDA with bf16 inputs the variable-length flash
    kernel runs (head widths a multiple of 8) and equals attention under the padding bias; otherwise the bias runs."""
    ran = []
    packed = modeling_rgnet._packed_key_attention
    monkeypatch.setattr(modeling_rgnet, "_packed_key_attention", lambda *a: ran.append(packed(*a)) or ran[-1])
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(6, 50, 2 * head_dim, generator=generator, dtype=torch.float64)
    key, value = torch.randn(2, 6, 9, 2 * head_dim, generator=generator, dtype=torch.float64)
    key_mask = (torch.arange(9)[None] < torch.tensor([9, 1, 4, 7, 9, 2])[:, None]).float()
    key_mask[4, :3] = 0  # padding before real tokens (a left-padded tokenizer)
    mask = modeling_rgnet.RGNetKeyPaddingMask(key_mask)
    expected = modeling_rgnet.multi_head_attention(query, key, value, mask.bias(torch.float64), 2, 0.0)
    inputs = (x.to(device, dtype) for x in (query, key, value))
    with torch.no_grad():
        output = modeling_rgnet.key_padding_attention(*inputs, mask.to(device), num_heads=2, dropout=0.0)
    runs_packed = device == "cuda" and dtype == torch.bfloat16 and head_dim % 8 == 0
    assert (len(ran) == 1 and ran[0] is not None) == runs_packed, ran
    assert output.dtype == dtype and output.device.type == device
    torch.testing.assert_close(output.cpu().double(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.skipif("cuda" not in DEVICES, reason="the packed text attention runs on CUDA")
def test_inference_with_packed_text_attention_matches_the_padding_bias(tester, monkeypatch):
    """The model's bf16 inference on CUDA: packed text attention or the padding bias, the same outputs."""
    ran = []
    packed_attention = modeling_rgnet._packed_key_attention
    monkeypatch.setattr(
        modeling_rgnet, "_packed_key_attention", lambda *a: ran.append(packed_attention(*a)) or ran[-1]
    )
    model = RGNetForVideoGrounding(tester.get_config(hidden_size=64, num_attention_heads=2)).eval()
    model.to("cuda", torch.bfloat16)
    inputs = to_device(tester.prepare_inputs(5), "cuda")
    with torch.no_grad():
        packed = model(**inputs)
        assert len(ran) == 1 and ran[0] is not None  # the text-to-video layer ran packed
        model.model.packed_text_attention = False
        biased = model(**inputs)
    assert len(ran) == 1
    for name in ("logits", "pred_spans", "window_logits"):
        torch.testing.assert_close(getattr(packed, name), getattr(biased, name), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_grounding_pair_index_may_stay_on_the_cpu(tester, device):
    """Like the other index inputs, a CPU `grounding_pair_index` works with the model on the device."""
    model = RGNetForVideoGrounding(tester.get_config()).eval()
    inputs = tester.prepare_inputs(5)
    index = torch.tensor([3, 0])
    with torch.no_grad():
        reference = model(**inputs, grounding_pair_index=index)
        outputs = model.to(device)(**to_device(inputs, device), grounding_pair_index=index)
    assert outputs.grounding_pair_index.device.type == device
    for name in ("logits", "pred_spans", "window_logits"):
        torch.testing.assert_close(getattr(outputs, name).cpu(), getattr(reference, name), atol=1e-4, rtol=1e-4)


# ---- torch.compile (the Trainer's `torch_compile=True`, `benchmark_model.py --compile`) ----

# `aot_eager` traces the forward and backward as the compiler does, in seconds; `inductor` also generates the kernels.
COMPILE_BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]


def _compiled_graph_breaks(function, *args):
    """The reasons of every graph break `torch.compile` meets in `function(*args)` (dynamo's counters record those
    before which no operator ran too, which `explain`'s `break_reasons` leave out)."""
    from torch._dynamo.utils import counters

    counters.clear()
    torch.compile(function, backend="eager")(*args)
    return list(counters["graph_break"])


def test_compiled_model_breaks_only_at_its_eager_parts(tester, fresh_compiler):
    """Under `torch.compile` the CPU training kernels step aside and the parts that need values on the host (input
    and label checks, the choice of the top windows, the loss with its matching, the factored selector attention's
    kernel choice and padded pairs) run eagerly: every graph break is one of those `torch.compiler.disable` calls,
    whatever the path (training; top-window inference with windows longer than the hidden size, which factors the
    selector bias)."""
    config = tester.get_config(hidden_size=8, num_attention_heads=2, dropout=0.1, input_dropout=0.1)
    model = RGNetForVideoGrounding(config)
    inputs, labels, noise = training_batch(tester)

    def training_loss(inputs):
        return model(**inputs, labels=labels, selector_noise=noise).loss

    def top_window_spans(inputs):
        with torch.no_grad():
            return model(**inputs, top_k_windows=2, pair_query_index=torch.arange(3).repeat_interleave(3)).pred_spans

    model.train()
    training_breaks = _compiled_graph_breaks(training_loss, inputs)
    model.eval()
    inference_breaks = _compiled_graph_breaks(top_window_spans, inputs)
    assert training_breaks and inference_breaks
    for reason in training_breaks + inference_breaks:
        assert "torch.compiler.disable" in reason, reason


def test_compiled_inference_traces_the_selector_row_correction(tester, fresh_compiler, monkeypatch):
    """The factored selector attention leaves only its kernel choice and its padded pairs to eager code: the row
    correction (elementwise passes over `(N, S, H·d)` tensors) is in a compiled graph, where it fuses, and the padded
    pair computed again eagerly is written into that graph's output."""
    config = tester.get_config(hidden_size=8, num_attention_heads=2)
    model = RGNetForVideoGrounding(config).eval()
    inputs = tester.prepare_inputs(9, config)
    inputs["video_mask"][:] = 1
    inputs["video_mask"][3, -2:] = 0  # one pair with padded keys: the others run bias-free and are corrected
    calls = []
    padded_pairs = modeling_rgnet._with_padded_pairs_exact
    monkeypatch.setattr(
        modeling_rgnet,
        "_with_padded_pairs_exact",
        lambda *a: calls.append(len(a[-1].padded_pairs)) or padded_pairs(*a),
    )
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    with torch.no_grad():
        expected = model(**inputs)
        compiled = torch.compile(lambda: model(**inputs), backend=backend)()
    targets = [node.target for graph in graphs for node in graph.graph.nodes if node.op == "call_function"]
    assert torch.lerp in targets and torch.exp in targets
    assert calls and set(calls) == {1}  # the padded pair, eager and compiled
    for name in ("logits", "pred_spans", "window_logits", "encoder_last_hidden_state"):
        torch.testing.assert_close(compiled[name], expected[name], atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_training_step_matches_eager(tester, device, backend, fresh_compiler):
    config = tester.get_config(dropout=0.0, input_dropout=0.0)
    inputs, labels, noise = training_batch(tester)
    inputs, labels, noise = to_device(inputs, device), to_device(labels, device), noise.to(device)
    model = RGNetForVideoGrounding(config).to(device).train()

    def step(module):
        model.zero_grad(set_to_none=True)
        loss = module(**inputs, labels=labels, selector_noise=noise).loss
        loss.backward()
        return loss.detach(), {name: param.grad.clone() for name, param in model.named_parameters()}

    loss, gradients = step(model)
    compiled_loss, compiled_gradients = step(torch.compile(model, backend=backend))
    torch.testing.assert_close(compiled_loss, loss, atol=1e-5, rtol=1e-5)
    # Some gradients are zero up to rounding (key biases under softmax); compare all against the largest.
    scale = max(gradient.abs().max() for gradient in gradients.values())
    for name, gradient in gradients.items():
        torch.testing.assert_close(
            compiled_gradients[name], gradient, atol=1e-4 * scale, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("backend", COMPILE_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_top_k_window_inference_matches_eager(tester, device, backend, fresh_compiler, monkeypatch):
    """Compiled inference chooses the same windows and predicts the same spans; the factored selector attention
    (windows of 13 tokens, hidden size 8) runs eagerly inside it, with its fused kernel."""
    fused_calls = []
    fused = modeling_rgnet._attention_with_logsumexp
    monkeypatch.setattr(modeling_rgnet, "_attention_with_logsumexp", lambda *a: fused_calls.append(1) or fused(*a))
    config = tester.get_config(hidden_size=8, num_attention_heads=2, num_encoder_layers=2)
    model = RGNetForVideoGrounding(config).to(device).eval()
    inputs = tester.prepare_inputs(12)
    inputs["video_mask"][:-1] = 1.0  # one pair with padded keys (computed under its bias), as at a video's end
    inputs = to_device(inputs, device)
    pair_query_index = torch.arange(3, device=device).repeat_interleave(4)
    with torch.no_grad():
        reference = model(**inputs, top_k_windows=2, pair_query_index=pair_query_index)
        eager_calls = len(fused_calls)
        outputs = torch.compile(model, backend=backend)(**inputs, top_k_windows=2, pair_query_index=pair_query_index)
    assert eager_calls > 0 and len(fused_calls) == 2 * eager_calls
    assert torch.equal(outputs.grounding_pair_index, reference.grounding_pair_index)
    for name in ("logits", "pred_spans", "window_logits", "saliency_scores"):
        torch.testing.assert_close(getattr(outputs, name), getattr(reference, name), atol=1e-4, rtol=1e-4)
