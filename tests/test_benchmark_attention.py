"""`scripts/benchmark_attention.py`: the encoder attention timed in each form (the factored form's equality with the
written-out bias is tested in `test_modeling_rgnet_fast_paths.py`)."""

import json

import torch

from scripts.benchmark_attention import attention_inputs, main


def test_inputs_pad_the_last_window_and_select_about_half_the_frames():
    query, key, value, mask = attention_inputs(3, 30, 2, 8, torch.float32, "cpu", seed=0)
    assert query.shape == key.shape == value.shape == (3, 31, 16)
    assert mask.padded_pairs.tolist() == [2] and mask.sequence_mask[2].sum() == 21
    assert 0.3 < mask.penalised_rows[:2].float().mean() < 0.7


def test_tiny_report(tmp_path):
    output = tmp_path / "attention.json"
    report = main(["--tiny", "--device", "cpu", "--precision", "fp32", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    variants = report["variants"]
    assert set(variants) == {"selector_bias", "selector_attention", "padding_bias", "no_bias"}
    assert all(entry["median_ms"] > 0 for entry in variants.values())
    assert variants["selector_attention"]["max_abs_error"] < 1e-5
    assert variants["selector_bias"]["max_abs_error"] == 0
