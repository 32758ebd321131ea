"""The bias-free form of the selector's attention that `scripts/benchmark_attention.py` times: the same function."""

import json

import pytest
import torch

from modeling_rgnet import build_selector_attention_bias, padding_bias
from scripts.benchmark_attention import attention_inputs, diagonal_corrected_attention, main


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_diagonal_correction_equals_attention_under_the_selector_bias(dtype, tolerance):
    query, key, value, gate, valid = attention_inputs(3, 20, 2, 8, dtype, "cpu", seed=1)
    assert not valid.bool().all()  # the last pair's window is padded
    penalised = (gate < 0.5) & valid.bool()
    penalised[:, 0] = False
    assert penalised.any() and (~penalised & valid.bool()).any()
    # Reference in float64 from the materialised bias: the model's function.
    bias = build_selector_attention_bias(gate, valid, "additive_unit_bias", torch.float64)
    scores = query.double() @ key.double().transpose(-1, -2) / 8**0.5 + bias
    expected = torch.softmax(scores, dim=-1) @ value.double()
    corrected = diagonal_corrected_attention(query, key, value, penalised, padding_bias(valid, dtype))
    assert corrected.dtype == dtype
    torch.testing.assert_close(corrected.double(), expected, atol=tolerance, rtol=tolerance)


def test_tiny_report(tmp_path):
    output = tmp_path / "attention.json"
    report = main(["--tiny", "--device", "cpu", "--precision", "fp32", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    variants = report["variants"]
    assert set(variants) == {"selector_bias", "padding_bias", "no_bias", "diagonal_correction"}
    assert all(entry["median_ms"] > 0 for entry in variants.values())
    assert variants["diagonal_correction"]["max_abs_error"] < 1e-5
    assert variants["padding_bias"]["max_abs_error"] > 1e-3  # without the diagonal term: another function
