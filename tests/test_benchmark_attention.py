"""`scripts/benchmark_attention.py`: the encoder attention timed in each form (the factored form's equality with the
written-out bias is tested in `test_modeling_rgnet_fast_paths.py`)."""

import json

import torch

from scripts.benchmark_attention import attention_inputs, main


def test_inputs_pad_each_querys_first_and_last_windows_and_select_about_half_the_frames():
    query, key, value, mask = attention_inputs(10, 30, 2, 8, torch.float32, "cpu", seed=0, windows_per_query=5)
    assert query.shape == key.shape == value.shape == (10, 31, 16)
    assert mask.padded_pairs.tolist() == [0, 4, 5, 9] and mask.sequence_mask[4].sum() == 16
    assert 0.3 < mask.penalised_rows[1:4].float().mean() < 0.7


def test_tiny_report(tmp_path):
    output = tmp_path / "attention.json"
    report = main(["--tiny", "--device", "cpu", "--precision", "fp32", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    variants = report["variants"]
    assert set(variants) == {"selector_bias", "selector_attention", "padding_bias", "no_bias"}
    assert all(entry["median_ms"] > 0 for entry in variants.values())
    assert report["selector_attention_kernel"] == "cpu_flash" and report["padded_pairs"] == 4
    assert variants["selector_attention"]["max_abs_error"] < 1e-5
    assert variants["padding_bias"]["max_abs_error"] > 1e-3  # without the selector's term: another function
