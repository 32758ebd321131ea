"""`scripts/benchmark_attention.py`: the encoder attention timed in each form (the factored form's equality with the
written-out bias is tested in `test_modeling_rgnet_fast_paths.py`)."""

import json

import pytest
import torch

import scripts.benchmark_attention as benchmark_attention
from scripts.benchmark_attention import _parse_args, attention_inputs, main, text_attention_inputs


def test_inputs_pad_each_querys_first_and_last_windows_and_select_about_half_the_frames():
    query, key, value, mask = attention_inputs(10, 30, 2, 8, torch.float32, "cpu", seed=0, windows_per_query=5)
    assert query.shape == key.shape == value.shape == (10, 31, 16)
    assert mask.padded_pairs.tolist() == [0, 4, 5, 9] and mask.sequence_mask[4].sum() == 16
    assert 0.3 < mask.penalised_rows[1:4].float().mean() < 0.7


def test_text_inputs_hold_right_padded_queries_of_a_third_of_the_tokens_or_more():
    query, key, value, mask = text_attention_inputs(40, 9, 12, 2, 4, torch.float32, "cpu", seed=0)
    assert query.shape == (40, 9, 8) and key.shape == value.shape == (40, 12, 8)
    lengths = mask.key_mask.sum(1)
    assert lengths.min() >= 4 and lengths.max() == 12 and len(set(lengths.tolist())) > 3
    assert torch.equal(mask.key_mask, (torch.arange(12)[None] < lengths[:, None]).float())


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
    text = report["text_to_video"]
    assert set(text) == {"text_bias", "packed_text"} and report["text_tokens"] == 6
    assert all(entry["median_ms"] > 0 for entry in text.values())
    assert text["packed_text"]["max_abs_error"] < 1e-6 and report["packed_text_kernel"] is False  # the CPU: the bias


def test_tiny_sizes_only_replace_options_left_at_their_defaults():
    args = _parse_args(["--tiny", "--steps", "5", "--pairs", "4", "--output", "o.json"])
    assert (args.steps, args.pairs, args.frames, args.warmup) == (5, 4, 30, 1)
    with pytest.raises(SystemExit):  # a smoke run names its output
        _parse_args(["--tiny"])


def test_the_median_of_an_even_number_of_times_is_the_mean_of_the_middle_two(monkeypatch):
    clock = iter([0.0, 0.010, 1.0, 1.050, 2.0, 2.010, 3.0, 3.050])  # runs of 10, 50, 10 and 50 ms
    monkeypatch.setattr(benchmark_attention.time, "perf_counter", lambda: next(clock))
    timing = benchmark_attention._time(lambda: None, torch.device("cpu"), warmup=0, steps=4)
    assert timing == {"median_ms": pytest.approx(30.0), "min_ms": pytest.approx(10.0)}


def test_tiny_keeps_an_option_given_at_its_full_size_default():
    """`--tiny --steps 10` once ran 2 steps: an option given with the full-size default's value was taken as not
    given and replaced by the tiny size."""
    args = _parse_args(["--tiny", "--steps", "10", "--frames", "900", "--output", "o.json"])
    assert (args.steps, args.frames, args.pairs) == (10, 900, 8)
    full = _parse_args(["--device", "cpu"])
    sizes = {"pairs": 1296, "frames": 900, "steps": 10, "warmup": 2, "windows_per_query": 81, "text_tokens": 25}
    assert {option: getattr(full, option) for option in sizes} == sizes


def test_device_and_output_are_checked_before_the_measurement(tmp_path, capsys):
    """`--device gpu` once ended in torch's RuntimeError traceback, an `--output` folder in IsADirectoryError after the
    whole benchmark."""
    with pytest.raises(SystemExit):
        _parse_args(["--tiny", "--device", "gpu", "--output", str(tmp_path / "o.json")])
    assert "--device gpu: not a torch device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse_args(["--tiny", "--device", "cpu", "--output", str(tmp_path)])
    assert f"`--output` {str(tmp_path)!r} is a folder" in capsys.readouterr().err
