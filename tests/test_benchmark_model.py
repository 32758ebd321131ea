"""Smoke test of `scripts/benchmark_model.py` on its tiny configuration."""

import json
import math

import pytest
import torch

import scripts.benchmark_model as benchmark_model
from configuration_rgnet import RGNetConfig
from processing_rgnet import compute_num_windows
from scripts.benchmark_model import (
    ORIGINAL_REFERENCE,
    REPO_ROOT,
    WORKLOADS,
    _ratios,
    count_compiled_step_kernels,
    default_output_path,
    main,
    time_video_upload,
    top1_agreement,
)


@pytest.fixture(autouse=True)
def _restore_global_rng():
    """These tests draw from (and seed) the global generator; later tests in the session must not see it."""
    with torch.random.fork_rng():
        yield


def test_tiny_benchmark_writes_every_workload(tmp_path):
    output = tmp_path / "model_cpu.json"
    report = main(["--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    environment = report["environment"]
    for key in ("device", "device_kind", "device_name", "cpu_count", "torch_num_threads", "torch", "transformers"):
        assert key in environment
    assert environment["device_kind"] == "cpu"
    assert set(report["workloads"]) == set(WORKLOADS)
    for name, entry in report["workloads"].items():
        assert "config" in entry and entry["kind"] in ("train", "inference")
        if entry["kind"] == "train":
            measured = entry["fp32"]
            assert measured["median_s"] > 0 and measured["peak_memory_gb"] > 0, name
            assert measured["pairs_per_s"] > 0 and len(measured["losses"]) == 1
            continue
        assert entry["num_windows"] > 1
        for pipeline in ("processor", "shared_windows"):
            measured = entry[f"{pipeline}_fp32"]
            assert measured["queries_per_s"] > 0 and measured["peak_memory_gb"] > 0, (name, pipeline)
            assert {"prepare_s", "model_s", "post_process_s"} <= measured.keys()
            if pipeline == "shared_windows":  # the video's upload and cut: the first part of `prepare_s`
                assert 0 <= measured["video_prepare_s"] <= measured["prepare_s"]
            else:
                assert "video_prepare_s" not in measured
        exact = entry["pipelines_top1_agreement"]["fp32"]
        assert exact["fraction"] == 1.0 and exact["identical_seconds"] == exact["queries"]
    cross_pairs = report["workloads"]["mad-train"]["fp32"]
    assert cross_pairs["grounded_pairs"] == cross_pairs["num_queries"] < cross_pairs["num_pairs"]


@pytest.mark.parametrize("name", ["mad-inference", "ego4d-inference"])
def test_inference_workloads_have_the_original_measurements_windows_per_query(name):
    """Per-query figures compare with the original's only at the same number of windows per query."""
    workload = WORKLOADS[name]
    stride = RGNetConfig.from_preset(workload.preset).window_stride
    assert compute_num_windows(workload.num_video_frames, stride) == ORIGINAL_REFERENCE[name]["num_windows"]
    # The longest such video: one frame more starts another window.
    assert compute_num_windows(workload.num_video_frames + 1, stride) > ORIGINAL_REFERENCE[name]["num_windows"]
    entry = {"kind": "inference", "num_windows": 81, "num_queries": 8, "run": {"median_s": 0.08, "s_per_query": 0.01}}
    ratios = _ratios(name, entry, torch.device("cuda"))  # (reads no device)
    assert ratios["num_windows"] == 81 and ratios["reference_num_windows"] == ORIGINAL_REFERENCE[name]["num_windows"]
    assert ratios["run_queries_per_s_speedup"] == round(ORIGINAL_REFERENCE[name]["gpu_s_per_query"] / 0.01, 3)


def test_video_upload_is_timed_both_ways():
    """(CUDA runs report it; any device can run it.)"""
    timings = time_video_upload(torch.randn(4096, 64), torch.device("cpu"), repeats=2)
    expected = {f"upload_{way}{first}_s" for way in ("pageable", "copy_to_device") for first in ("", "_first")}
    assert timings.keys() == expected and all(value >= 0 for value in timings.values())


def test_tiny_benchmark_reports_bf16_agreement_over_query_groups(tmp_path):
    report = main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--workloads",
            "ego4d-finetune-train,ego4d-inference",
            "--precisions",
            "fp32,bf16,bf16-weights",
            "--queries-per-batch",
            "1",
            "--overlap-post-processing",  # the worker thread, as on CUDA: two groups, one in flight
            "on",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--output",
            str(tmp_path / "out.json"),
        ]
    )
    entry = report["workloads"]["ego4d-inference"]
    for pipeline in ("processor", "shared_windows"):
        for precision in ("bf16", "bf16-weights"):
            assert entry[f"{pipeline}_{precision}"]["queries_per_s"] > 0
            agreement = entry[f"{pipeline}_{precision}_top1_agreement"]
            assert agreement["queries"] == 2 and 0.0 <= agreement["fraction"] <= 1.0
    assert entry["overlap_post_processing"] is True
    assert entry["pipelines_top1_agreement"]["fp32"]["fraction"] == 1.0
    # bfloat16 weights are an inference precision: training steps run fp32 and autocast only.
    training = report["workloads"]["ego4d-finetune-train"]
    assert "fp32" in training and "bf16" in training and "bf16-weights" not in training


def test_runs_that_are_not_full_measurements_cannot_replace_the_committed_results(tmp_path, monkeypatch, capsys):
    # Were the check to fail, the run would write here instead of into the checkout.
    monkeypatch.setattr(benchmark_model, "default_output_path", lambda *args: tmp_path / "model.json")
    with pytest.raises(SystemExit):  # a smoke run names its output
        main(["--tiny", "--device", "cpu", "--workloads", "ego4d-inference"])
    assert "--tiny is a smoke run: pass --output" in capsys.readouterr().err
    results = REPO_ROOT / "benchmarks" / "results"
    cpu = torch.device("cpu")
    assert default_output_path(cpu, list(WORKLOADS), "default") == results / "model_cpu.json"
    assert default_output_path(cpu, ["mad-train"], "default") == results / "model_cpu_mad-train.json"
    assert default_output_path(cpu, ["mad-train", "mad-inference"], "retain") == (
        results / "model_cpu_mad-train_mad-inference_malloc-retain.json"
    )


@pytest.mark.parametrize("option", ["--inference-queries", "--inference-chunk-pairs", "--threads"])
def test_negative_counts_are_refused_by_name(option, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--device", "cpu", option, "-3", "--output", str(tmp_path / "out.json")])
    assert f"{option} must be >= 0" in capsys.readouterr().err


def test_inference_queries_apply_to_the_tiny_workloads_too(tmp_path):
    arguments = ["--tiny", "--device", "cpu", "--workloads", "ego4d-inference", "--pipelines", "shared_windows"]
    arguments += ["--steps", "1", "--warmup", "0", "--inference-queries", "3", "--output", str(tmp_path / "o.json")]
    assert main(arguments)["workloads"]["ego4d-inference"]["num_queries"] == 3


def test_benchmark_rejects_unknown_precisions(tmp_path):
    with pytest.raises(SystemExit, match="--precisions must name some of fp32, bf16, bf16-weights"):
        main(["--tiny", "--device", "cpu", "--precisions", "fp16", "--output", str(tmp_path / "out.json")])


def test_top1_agreement_counts_the_same_proposal_with_overlapping_seconds():
    def top1(start, end, window, slot):
        return {"span": [start, end], "source": [window, slot], "window": window}

    reference = [top1(10.0, 20.0, 3, 1), top1(10.0, 20.0, 3, 1), top1(10.0, 20.0, 3, 1), top1(0.0, 4.0, 0, 2), None]
    other = [
        top1(10.0, 20.0, 3, 1),  # identical
        top1(10.2, 20.1, 3, 1),  # same proposal, IoU 0.97
        top1(10.0, 20.0, 4, 1),  # the same seconds from another window: a different proposal
        top1(0.0, 3.0, 0, 2),  # same proposal, IoU 0.75
        None,  # no prediction in either
    ]
    report = top1_agreement(reference, other)
    assert report["queries"] == 5 and report["kept"] == 3 and report["fraction"] == 0.6
    assert report["same_top1_source"] == 3 and report["same_top1_window"] == 3
    assert report["identical_seconds"] == 3 and report["iou_at_least_0.5"] == 4
    assert report["iou_min"] == 0.75


def test_top1_agreement_needs_queries():
    with pytest.raises(ValueError, match="at least one query"):
        top1_agreement([], [])


def test_selector_bias_flag_runs_the_written_out_bias(tmp_path, monkeypatch):
    import modeling_rgnet
    from scripts import benchmark_model

    calls = []
    factored = modeling_rgnet.selector_attention
    monkeypatch.setattr(modeling_rgnet, "selector_attention", lambda *a: calls.append(1) or factored(*a))
    # Windows longer than the tiny hidden size (32), where the factored form runs.
    monkeypatch.setitem(benchmark_model.TINY_OVERRIDES, "max_window_frames", 36)
    monkeypatch.setitem(benchmark_model.TINY_OVERRIDES, "window_stride", 18)
    arguments = ["--tiny", "--device", "cpu", "--workloads", "mad-inference", "--precisions", "fp32"]
    arguments += ["--pipelines", "shared_windows", "--steps", "1", "--warmup", "0"]
    report = main([*arguments, "--output", str(tmp_path / "factored.json")])
    assert calls and report["settings"]["selector_bias"] is False
    calls.clear()
    biased = main([*arguments, "--selector-bias", "--output", str(tmp_path / "biased.json")])
    assert not calls and biased["settings"]["selector_bias"] is True


def test_text_attention_bias_flag_turns_the_packed_text_attention_off(tmp_path, monkeypatch):
    import modeling_rgnet

    packed = []
    attention = modeling_rgnet.key_padding_attention
    monkeypatch.setattr(
        modeling_rgnet,
        "key_padding_attention",
        lambda q, k, v, mask, *a: packed.append(mask.packed) or attention(q, k, v, mask, *a),
    )
    arguments = ["--tiny", "--device", "cpu", "--workloads", "mad-inference", "--precisions", "fp32"]
    arguments += ["--pipelines", "shared_windows", "--steps", "1", "--warmup", "0"]
    report = main([*arguments, "--output", str(tmp_path / "packed.json")])
    assert packed and all(packed) and report["settings"]["text_attention_bias"] is False
    packed.clear()
    biased = main([*arguments, "--text-attention-bias", "--output", str(tmp_path / "biased.json")])
    assert packed and not any(packed) and biased["settings"]["text_attention_bias"] is True


def test_profile_tables_name_each_attention_by_its_input_shapes(tmp_path):
    """`--profile`: operators by time, then the attention operators by input shape, which tell the model's
    attentions apart (here the text-to-video one: keys of the 5 tiny text tokens, their padding bias)."""
    profile = tmp_path / "profile.txt"
    arguments = ["--tiny", "--device", "cpu", "--workloads", "mad-inference", "--precisions", "fp32"]
    arguments += ["--pipelines", "shared_windows", "--steps", "1", "--warmup", "0", "--profile", str(profile)]
    main([*arguments, "--output", str(tmp_path / "o.json")])
    text = profile.read_text()
    assert text.startswith("== mad: shared_windows pipeline, fp32") and "-- attention operators by input shape" in text
    shapes_table = text.split("-- attention operators by input shape")[1]
    assert "Input Shapes" in shapes_table and "[16, 1, 1, 5]" in shapes_table


def test_compiled_step_kernels_are_counted_from_the_profile(fresh_compiler):
    """On the CPU: inductor's generated kernels (profiled with `cpp.enable_kernel_profile`, as `--compile` sets it)
    and the operators outside them; the matrix product runs as ATen's, the other operations fuse into one kernel."""
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        function = torch.compile(lambda x: (x.sin() + 1).relu() @ x, dynamic=False)
        x = torch.randn(8, 8)
        function(x)
        counts = count_compiled_step_kernels(lambda: function(x), torch.device("cpu"))
    assert counts == {"compiled_step_generated_kernels": 1, "compiled_step_operators": 1}


def test_compile_mode_needs_compile(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tiny", "--device", "cpu", "--compile-mode", "reduce-overhead", "--output", str(tmp_path / "o.json")])
    assert "--compile-mode reduce-overhead needs --compile" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_evaluation_chunks_group_queries_as_evaluation_does(tmp_path, monkeypatch, capsys):
    """`--evaluation-chunks`: whole queries per forward within `default_pairs_per_batch`, as `predict_long_videos`
    runs them by default (here a budget of one query's windows and a pair, so the two queries go one at a time)."""
    import scripts.benchmark_model as benchmark_model

    budgets = []

    def budget(window_frames, device):
        budgets.append((window_frames, device.type))
        return 7  # the tiny Ego4D video has 6 windows

    monkeypatch.setattr(benchmark_model, "default_pairs_per_batch", budget)
    run = ["--tiny", "--device", "cpu", "--workloads", "ego4d-inference", "--pipelines", "shared_windows"]
    run += ["--steps", "1", "--warmup", "0", "--evaluation-chunks"]
    entry = main([*run, "--output", str(tmp_path / "o.json")])["workloads"]["ego4d-inference"]
    assert budgets == [(entry["config"]["max_window_frames"], "cpu")] and entry["num_windows"] == 6
    assert entry["evaluation_chunks"] is True and entry["queries_per_batch"] == 1 and entry["chunk_pairs"] == 6
    assert entry["num_queries"] == 2 and entry["shared_windows_fp32"]["queries_per_s"] > 0
    with pytest.raises(SystemExit):
        main([*run, "--queries-per-batch", "4"])
    assert "--evaluation-chunks sets the query groups" in capsys.readouterr().err


# One training and one inference workload, each compiled once (fp32, one pipeline, one step).
COMPILED_RUN = ["--tiny", "--device", "cpu", "--workloads", "ego4d-finetune-train,ego4d-inference", "--compile"]
COMPILED_RUN += ["--precisions", "fp32", "--pipelines", "shared_windows", "--steps", "1"]


@pytest.mark.parametrize(("mode", "expected"), [("default", None), ("reduce-overhead", "reduce-overhead")])
def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch, mode, expected):
    """`--compile-mode` is torch.compile's `mode` for the training and the inference model (`default`: none, as
    before); recorded in the settings and the inference entry. With CUDA graphs each measurement's graphs are dropped
    after it (`torch._dynamo.reset`). The compiler is stubbed out: only the wiring is under test."""
    calls, resets = [], []

    def compile_stub(module, **kwargs):
        calls.append(kwargs)
        return module

    monkeypatch.setattr(torch, "compile", compile_stub)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    arguments = [*COMPILED_RUN, "--warmup", "0", "--output", str(tmp_path / "out.json")]
    report = main([*arguments, "--compile-mode", mode])
    assert calls == [{"dynamic": False, "mode": expected}] * 2
    assert len(resets) == (2 if mode == "reduce-overhead" else 0)  # after the training step and after inference
    assert report["settings"]["compile"] is True and report["settings"]["compile_mode"] == mode
    training, inference = report["workloads"]["ego4d-finetune-train"], report["workloads"]["ego4d-inference"]
    assert inference["compiled"] is True and inference["compile_mode"] == mode
    assert "compiled_step_generated_kernels" in training["fp32"]["operators"]
    # The CUDA-graph modes report the graphs inductor skipped (none here: nothing was compiled).
    for entry in (training["fp32"], inference):
        assert entry.get("cudagraph_skips") == (0 if mode == "reduce-overhead" else None)


@pytest.mark.slow
def test_reduce_overhead_compiles_on_the_cpu(tmp_path, fresh_compiler):
    """`--compile --compile-mode reduce-overhead` with inductor (about a minute or two on 2 cores): on the CPU inductor
    skips CUDA graphs, counted in `cudagraph_skips`, and the step and pipeline run."""
    report = main(
        [*COMPILED_RUN, "--compile-mode", "reduce-overhead", "--warmup", "1", "--output", str(tmp_path / "out.json")]
    )
    training, inference = report["workloads"]["ego4d-finetune-train"], report["workloads"]["ego4d-inference"]
    assert all(math.isfinite(loss) for loss in training["fp32"]["losses"])
    assert training["fp32"]["cudagraph_skips"] > 0 and inference["cudagraph_skips"] > 0
    assert inference["shared_windows_fp32"]["queries_per_s"] > 0


def test_workloads_must_name_at_least_one(tmp_path, capsys):
    """`--workloads ,` once ran nothing and wrote an empty report (by default to `model_<device>_.json`)."""
    with pytest.raises(SystemExit):
        main(["--tiny", "--device", "cpu", "--workloads", ",", "--output", str(tmp_path / "o.json")])
    assert "--workloads names no workload; choose from" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_an_unusable_device_is_refused_by_name(tmp_path, capsys):
    """`--device gpu` once ended in torch's RuntimeError traceback."""
    with pytest.raises(SystemExit):
        main(["--tiny", "--device", "gpu", "--output", str(tmp_path / "o.json")])
    assert "--device gpu: not a torch device" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--output", "--profile"])
def test_report_paths_are_checked_before_the_measurements(tmp_path, capsys, flag):
    """An `--output` or `--profile` that is a folder (or under a file) once failed only when written: after the
    first workload's measurements."""
    arguments = ["--tiny", "--device", "cpu", "--workloads", "ego4d-finetune-train", "--steps", "1", "--warmup", "0"]
    other = "--profile" if flag == "--output" else "--output"
    with pytest.raises(SystemExit):
        main([*arguments, other, str(tmp_path / "other.txt"), flag, str(tmp_path)])
    assert f"`{flag}` {str(tmp_path)!r} is a folder; pass the path of the report file" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        main([*arguments, other, str(tmp_path / "other.txt"), flag, str(tmp_path / "file" / "x")])
    assert f"`{flag}` {str(tmp_path / 'file' / 'x')!r}: its folder cannot be created" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
