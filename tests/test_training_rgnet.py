"""RGNetTrainer, the training/evaluation scripts and multi-process training on a tiny dataset."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers.trainer_utils import PredictionOutput

import training_rgnet
from configuration_rgnet import RGNetConfig
from data_rgnet import load_rgnet_dataset
from modeling_rgnet import RGNetForVideoGrounding
from processing_rgnet import RGNetProcessor, compute_num_windows
from scripts import evaluate_rgnet, train_rgnet
from training_rgnet import (
    PostProcessingWorker,
    RGNetTrainer,
    RGNetTrainingArguments,
    RGNetTrainingDataset,
    SameVideoBatchSampler,
    check_dataset_matches_config,
    check_query_table,
    default_pairs_per_batch,
    get_recipe,
    predict_long_videos,
)

from .conftest import REPO_ROOT
from .tiny_data import TINY_CONFIG, build_tiny_dataset


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return build_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def make_trainer(dataset_dir, output_dir, *, pair_mode="cross_pairs", seed=0, config_overrides=None, **arguments):
    queries, store = load_rgnet_dataset(dataset_dir)
    torch.manual_seed(seed)
    config = RGNetConfig(
        **{**TINY_CONFIG, "pair_mode": pair_mode, "query_normalization": "ego4d", **(config_overrides or {})}
    )
    processor = RGNetProcessor.from_config(config)
    defaults = {
        "per_device_train_batch_size": 4,
        "num_train_epochs": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "seed": seed,
        "disable_tqdm": True,
    }
    args = RGNetTrainingArguments(output_dir=str(output_dir), **{**defaults, **arguments})
    train_dataset = RGNetTrainingDataset(queries["train"], store, processor, pair_mode=pair_mode, seed=seed)
    return RGNetTrainer(
        model=RGNetForVideoGrounding(config),
        args=args,
        train_dataset=train_dataset,
        eval_dataset=queries["validation"],
        feature_store=store,
        processing_class=processor,
    )


@pytest.mark.parametrize("pair_mode", ["cross_pairs", "paired_negative"])
def test_trainer_trains_logs_loss_terms_drops_lr_and_evaluates(tiny_dataset, tmp_path, pair_mode):
    trainer = make_trainer(tiny_dataset, tmp_path, pair_mode=pair_mode, lr_drop_epochs=[1], eval_strategy="epoch")
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(train_logs) == 8  # 16 queries / 4 per batch, 2 epochs
    for term in ("loss_span", "loss_giou", "loss_label", "loss_saliency", "loss_retrieval", "loss_label_0"):
        assert term in train_logs[0], term
    assert {log["learning_rate"] for log in train_logs[:4]} == {1e-3}
    assert [log["learning_rate"] for log in train_logs[4:]] == pytest.approx([1e-4] * 4)
    eval_logs = [log for log in trainer.state.log_history if "eval_R@1,IoU=0.5" in log]
    assert len(eval_logs) == 2
    for key in ("eval_R@5,IoU=0.3", "eval_mIoU", "eval_WindowR@1", "eval_R@1_mean"):
        assert 0.0 <= eval_logs[-1][key] <= 1.0
    assert eval_logs[-1]["eval_num_queries"] == 16


def test_lr_drops_come_after_the_epochs_the_trainer_counts_with_gradient_accumulation(tiny_dataset, tmp_path):
    # 4 batches per epoch in steps of 3: 2 optimizer steps per epoch, the second accumulating one batch.
    trainer = make_trainer(tiny_dataset, tmp_path, lr_drop_epochs=[1], gradient_accumulation_steps=3)
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["epoch"] for log in train_logs] == [0.75, 1.0, 1.75, 2.0]
    assert [log["learning_rate"] for log in train_logs] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def test_scheduler_type_and_warmup_are_honoured_and_the_drops_multiply_them(tiny_dataset, tmp_path):
    from transformers import get_cosine_schedule_with_warmup

    assert RGNetTrainingArguments(output_dir=str(tmp_path)).lr_scheduler_type == "constant"  # the recipes' steps
    steps = range(8)  # 2 epochs of 4 optimizer steps
    trainer = make_trainer(
        tiny_dataset, tmp_path, lr_scheduler_type="cosine", warmup_steps=2, lr_drop_epochs=[1], lr_drop_factor=0.5
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    cosine = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=1.0), 2, 8).lr_lambdas[0]
    expected = [cosine(step) * (0.5 if step >= 4 else 1.0) for step in steps]
    assert [trainer.lr_scheduler.lr_lambdas[0](step) for step in steps] == pytest.approx(expected)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # the first step's: warm-up starts at 0
    # "constant" with warm-up warms up (transformers' "constant" would ignore `warmup_steps`).
    trainer = make_trainer(tiny_dataset, tmp_path, warmup_steps=4, lr_drop_epochs=[1])
    trainer.create_optimizer_and_scheduler(num_training_steps=8)
    expected = [0.0, 0.25, 0.5, 0.75, 0.1, 0.1, 0.1, 0.1]
    assert [trainer.lr_scheduler.lr_lambdas[0](step) for step in steps] == pytest.approx(expected)
    trainer = make_trainer(
        tiny_dataset, tmp_path, lr_scheduler_type="reduce_lr_on_plateau", lr_drop_epochs=[1], eval_strategy="epoch"
    )
    with pytest.raises(ValueError, match=r"`lr_drop_epochs` \[1\] multiply a step-wise schedule, which "):
        trainer.create_optimizer_and_scheduler(num_training_steps=8)


def test_trainer_without_arguments_and_best_model_selection_take_rgnets_defaults(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative to the working directory
    processor = RGNetProcessor.from_config(RGNetConfig(**TINY_CONFIG))
    trainer = RGNetTrainer(model=RGNetForVideoGrounding(RGNetConfig(**TINY_CONFIG)), processing_class=processor)
    assert isinstance(trainer.args, RGNetTrainingArguments) and trainer.args.max_grad_norm == 0.1
    args = RGNetTrainingArguments(
        output_dir=str(tmp_path), load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch"
    )
    assert (args.metric_for_best_model, args.greater_is_better) == ("R@1_mean", True)  # evaluation has no loss


@pytest.mark.parametrize(
    "zero_weight, find_unused",
    [(None, False), ("retrieval_loss_weight", True), ("saliency_loss_weight", True), ("label_loss_weight", True)],
)
def test_ddp_looks_for_unused_parameters_when_a_head_gets_no_loss(tiny_dataset, tmp_path, zero_weight, find_unused):
    overrides = {} if zero_weight is None else {zero_weight: 0.0}
    trainer = make_trainer(tiny_dataset, tmp_path, config_overrides=overrides)
    assert trainer.args.ddp_find_unused_parameters is find_unused
    trainer = make_trainer(tiny_dataset, tmp_path, config_overrides=overrides, ddp_find_unused_parameters=False)
    assert trainer.args.ddp_find_unused_parameters is False  # the user's choice stands


def test_weight_decay_covers_every_parameter(tiny_dataset, tmp_path):
    trainer = make_trainer(tiny_dataset, tmp_path)
    trainer.create_optimizer()
    decayed = [group for group in trainer.optimizer.param_groups if group["weight_decay"] == 1e-4]
    assert sum(len(group["params"]) for group in decayed) == len(list(trainer.model.parameters()))
    assert trainer.args.max_grad_norm == 0.1


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tiny_dataset, tmp_path):
    common = {
        "num_train_epochs": 2,
        "save_strategy": "steps",
        "save_steps": 3,
        "lr_drop_epochs": [1],
        "config_overrides": {"dropout": 0.1},
    }
    full = make_trainer(tiny_dataset, tmp_path / "full", **common)
    full.train()
    interrupted = make_trainer(tiny_dataset, tmp_path / "interrupted", max_steps=3, **common)
    interrupted.train()
    resumed = make_trainer(tiny_dataset, tmp_path / "interrupted", seed=0, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-3"))
    expected = full.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_retain_freed_cpu_memory_option_sets_up_the_allocator(tiny_dataset, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(training_rgnet, "retain_freed_host_memory", lambda: calls.append(True) or True)
    make_trainer(tiny_dataset, tmp_path / "plain")
    assert calls == []
    make_trainer(tiny_dataset, tmp_path / "retain", retain_freed_cpu_memory=True)
    assert calls == [True]


def test_retain_freed_host_memory_applies_on_glibc():
    # In a child process: the setting is process-wide.
    code = (
        "import platform, sys; from training_rgnet import retain_freed_host_memory; "
        "applied = retain_freed_host_memory(); sys.exit(0 if applied == (platform.libc_ver()[0] == 'glibc') else 1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_long_video_inference_sends_each_window_once_and_matches_repeated_windows(tiny_dataset):
    """`predict_long_videos` runs whole queries per forward, sends each window once and decodes only each query's kept
    windows: its model outputs equal those of one processor batch per video with a window copy per pair, and its
    predictions those of decoding every window."""
    queries, store = load_rgnet_dataset(tiny_dataset)
    validation = queries["validation"]
    torch.manual_seed(0)
    config = RGNetConfig(**{**TINY_CONFIG, "query_normalization": "ego4d", "top_k_windows": 2})
    model = RGNetForVideoGrounding(config).eval()
    processor = RGNetProcessor.from_config(config)
    seen = defaultdict(list)

    def record(module, args, kwargs, outputs):
        assert kwargs["video_features"].shape[0] == len(torch.unique(kwargs["video_pair_index"]))  # no unused window
        assert kwargs["top_k_windows"] == 2
        seen["pairs"].append(len(kwargs["video_pair_index"]))
        seen["windows"].append(kwargs["video_features"][kwargs["video_pair_index"]])
        for name in ("logits", "pred_spans", "window_logits", "grounding_pair_index"):
            seen[name].append(getattr(outputs, name))

    handle = model.register_forward_hook(record, with_kwargs=True)
    predicted = predict_long_videos(model, processor, validation, store, pairs_per_batch=17, progress=False)
    handle.remove()
    assert [item["query_id"] for item in predicted] == list(validation["query_id"])
    num_windows = compute_num_windows(store.num_frames(validation[0]["video_id"]), processor.window_stride)
    assert all(pairs % num_windows == 0 and pairs <= 17 for pairs in seen["pairs"])  # whole queries per forward
    assert max(seen["pairs"]) == 17 // num_windows * num_windows

    expected = defaultdict(list)
    for video in dict.fromkeys(validation["video_id"]):  # table order, as predict_long_videos goes
        rows = validation.filter(lambda row, video=video: row["video_id"] == video)
        text = [np.asarray(features, dtype=np.float32) for features in rows["text_features"]]
        inputs = processor(video_features=store.read_frames(video), text_features=text)
        with torch.no_grad():
            outputs = model(**inputs)
        expected["windows"].append(inputs["video_features"])
        for name in ("logits", "pred_spans", "window_logits"):
            expected[name].append(getattr(outputs, name))
    assert torch.equal(torch.cat(seen["windows"]), torch.cat(expected["windows"]))
    first_pairs = np.cumsum([0] + seen["pairs"][:-1])
    for index, pairs in zip(seen["grounding_pair_index"], seen["pairs"], strict=True):
        assert len(index) >= 2 * pairs // num_windows  # at least top_k_windows per query
    grounded = torch.cat(
        [index + int(first) for index, first in zip(seen["grounding_pair_index"], first_pairs, strict=True)]
    )
    for name in ("logits", "pred_spans", "window_logits"):
        reference = torch.cat(expected[name])
        reference = reference if name == "window_logits" else reference[grounded]
        torch.testing.assert_close(torch.cat(seen[name]), reference, atol=1e-5, rtol=1e-5, msg=name)

    # Fewer pairs per forward than a query has windows: still one whole query per forward, the same predictions.
    assert predict_long_videos(model, processor, validation, store, pairs_per_batch=5, progress=False) == predicted
    # The default forward size is a frame budget: every query of these short videos in one forward per video.
    assert default_pairs_per_batch(900) == 256 and default_pairs_per_batch(90) == 2560
    assert default_pairs_per_batch(10**6) == 1 and default_pairs_per_batch(900, "cpu") == 256
    seen["pairs"].clear()
    handle = model.register_forward_hook(record, with_kwargs=True)
    assert predict_long_videos(model, processor, validation, store, progress=False) == predicted
    handle.remove()
    queries_per_video = Counter(validation["video_id"])
    assert len(seen["pairs"]) == len(queries_per_video)
    budget = default_pairs_per_batch(processor.max_window_frames)
    for video, count in queries_per_video.items():
        assert count * compute_num_windows(store.num_frames(video), processor.window_stride) <= budget
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="`pairs_per_batch` must be a positive integer or None"):
            predict_long_videos(model, processor, validation, store, pairs_per_batch=bad, progress=False)
    # An error inside leaves the model in the mode it came in.
    model.train()
    with pytest.raises(ValueError, match="max_predictions"):
        predict_long_videos(model, processor, validation, store, progress=False, max_predictions=0)
    assert model.training
    model.eval()
    # Post-processing on a worker thread while the next chunk runs (the default on accelerators): the same results.
    overlapped = predict_long_videos(
        model, processor, validation, store, pairs_per_batch=5, progress=False, overlap_post_processing=True
    )
    assert overlapped == predicted
    every_window = predict_long_videos(
        model, processor, validation, store, pairs_per_batch=17, progress=False, ground_all_windows=True
    )
    for item, reference in zip(predicted, every_window, strict=True):
        assert item["window_ranking"] == reference["window_ranking"]
        assert item["prediction_sources"] == reference["prediction_sources"]
        # Seconds and scores are rounded to 4 decimals (spec §7), so outputs a few ulps apart (other pairs share the
        # forward) may round one step apart. The fused score min-max normalises rounded scores, which scales such a
        # step by 1 / (range of the query's scores): its order is checked through `prediction_sources` above.
        predictions, expected_predictions = np.asarray(item["predictions"]), np.asarray(reference["predictions"])
        np.testing.assert_allclose(predictions[:, :4], expected_predictions[:, :4], atol=1.5e-4)


@pytest.mark.parametrize(
    ("free_gib", "mad_pairs", "ego4d_pairs"),
    [(140, 1296, 12960), (40, 994, 9942), (20, 497, 4971), (0, 1, 1)],  # an H200, cards of 48 and 24 GB, a full one
)
def test_default_forward_size_on_a_gpu_follows_its_free_memory(monkeypatch, free_gib, mad_pairs, ego4d_pairs):
    """On CUDA: 1,296 × 900 frames per forward (16 MAD queries of 81 windows), fewer where half the free memory
    holds fewer at 24 kB per frame; the CPU's budget does not ask the device."""
    seen, cached = [], {"reserved": 0, "allocated": 0}

    def mem_get_info(device):
        seen.append(device)
        return free_gib * 2**30, 141 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: cached["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: cached["allocated"])
    assert default_pairs_per_batch(900, "cuda:1") == mad_pairs
    assert default_pairs_per_batch(90, torch.device("cuda")) == ego4d_pairs
    assert seen == [torch.device("cuda:1"), torch.device("cuda")]
    assert default_pairs_per_batch(900, torch.device("cpu")) == 256 and len(seen) == 2
    # Memory the allocator holds unused (cached by earlier work) counts as free, as in a fresh process.
    cached.update(reserved=(140 - free_gib) * 2**30, allocated=0)
    assert default_pairs_per_batch(900, "cuda") == 1296
    cached.update(allocated=(140 - free_gib) * 2**30)
    assert default_pairs_per_batch(900, "cuda") == mad_pairs


def test_default_forward_size_on_a_gpu_stays_within_the_attention_kernels_batch_limit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (140 * 2**30, 141 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    assert default_pairs_per_batch(18, "cuda") == 64800 and default_pairs_per_batch(17, "cuda") == 65535
    assert default_pairs_per_batch(1, "cuda") == 65535 and default_pairs_per_batch(1) == 230400


def test_training_samples_are_reproducible_and_change_per_epoch(tiny_dataset):
    queries, store = load_rgnet_dataset(tiny_dataset)
    processor = RGNetProcessor.from_config(RGNetConfig(**TINY_CONFIG))
    dataset = RGNetTrainingDataset(queries["train"], store, processor, pair_mode="cross_pairs", seed=3)
    first, again = dataset[5], dataset[5]
    np.testing.assert_array_equal(first["video_features"], again["video_features"])
    assert first["noise_seed"] == again["noise_seed"]
    draws = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        draws.add((dataset[5]["noise_seed"], dataset[5]["window_offset"]))
    assert len(draws) == 6


def _noise_seeds_and_offsets(samples):
    return [(sample["noise_seed"], sample["window_offset"]) for sample in samples]


def test_persistent_dataloader_workers_draw_each_epochs_windows(tiny_dataset):
    queries, store = load_rgnet_dataset(tiny_dataset)
    processor = RGNetProcessor.from_config(RGNetConfig(**TINY_CONFIG))
    dataset = RGNetTrainingDataset(queries["train"], store, processor, pair_mode="cross_pairs", seed=3)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=8, num_workers=2, persistent_workers=True, collate_fn=_noise_seeds_and_offsets
    )
    for epoch in range(3):
        dataset.set_epoch(epoch)  # in the main process: the workers' copies read it
        drawn = [draw for batch in loader for draw in batch]
        assert drawn == [(dataset[item]["noise_seed"], dataset[item]["window_offset"]) for item in range(16)], epoch
        if epoch == 0:
            first = drawn
    assert drawn != first


def test_same_video_batches_group_queries_of_one_video():
    videos = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    sampler = SameVideoBatchSampler(videos, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    for batch in batches:
        assert len({videos[index] for index in batch}) == 1
    sampler.set_epoch(1)
    assert sorted(map(sorted, sampler)) == sorted(map(sorted, batches))


def test_same_video_batches_are_split_among_processes_without_repeats():
    """Several processes: accelerate shards the batches and, unless the sampler says it drops the last ones, pads an
    epoch whose batches do not divide among the processes with repeated batches."""
    from accelerate.data_loader import BatchSamplerShard

    videos = [video for video in "abcdef" for _ in range(3)]  # 18 queries: 9 batches of 2 for 2 processes
    sampler = SameVideoBatchSampler(videos, batch_size=2, seed=0)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=rank)) for rank in (0, 1)]
    drawn = [index for shard in shards for batch in shard for index in batch]
    assert len(shards[0]) == len(shards[1]) == 4 and len(drawn) == len(set(drawn)) == 16


def test_same_video_negatives_option_trains(tiny_dataset, tmp_path):
    trainer = make_trainer(tiny_dataset, tmp_path, same_video_negatives=True, num_train_epochs=1)
    trainer.train()
    assert trainer.state.global_step == 4


def test_query_table_without_needed_columns_is_rejected(tiny_dataset):
    queries, store = load_rgnet_dataset(tiny_dataset)
    with pytest.raises(ValueError, match="timestamps"):
        check_query_table(queries["train"].remove_columns("timestamps"), split="train", require_timestamps=True)
    without_tokens = queries["train"].remove_columns("text_features")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['text_features'\].*--text-features.*--text-lmdb"):
        check_query_table(without_tokens, split="train", require_timestamps=True, needs_text="text_features")
    check_query_table(without_tokens, split="train", require_timestamps=True, needs_text="query")  # a text encoder
    processor = RGNetProcessor.from_config(RGNetConfig(**TINY_CONFIG))
    with pytest.raises(ValueError, match="video_id"):
        RGNetTrainingDataset(queries["train"].remove_columns("video_id"), store, processor, pair_mode="cross_pairs")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['text_features'\]"):  # no tokenizer to read text
        RGNetTrainingDataset(without_tokens, store, processor, pair_mode="cross_pairs")
    twice = queries["train"].select([0, 1, 2, 0])
    with pytest.raises(ValueError, match=f"has `query_id` {twice[0]['query_id']!r} more than once; ids must be"):
        check_query_table(twice, split="train", require_timestamps=True)


def test_predict_runs_the_long_video_inference_of_evaluate(tiny_dataset, tmp_path):
    trainer = make_trainer(tiny_dataset, tmp_path)
    table = trainer.eval_dataset
    metrics = trainer.evaluate(table, metric_key_prefix="test")
    evaluated = trainer.last_predictions
    output = trainer.predict(table)
    assert isinstance(output, PredictionOutput)
    assert set(output.metrics) == set(metrics) - {"epoch"}  # `log` adds the epoch to evaluate's metrics
    for key, value in output.metrics.items():
        assert key.startswith("test_")
        if key != "test_runtime":
            assert value == metrics[key], key
    assert output.metrics["test_num_queries"] == len(table)
    assert trainer.last_predictions == evaluated
    assert len(output.predictions) == len(table)
    for moments, item in zip(output.predictions, evaluated, strict=True):
        assert moments.shape == (len(item["predictions"]), 5)
        np.testing.assert_array_equal(moments, np.asarray(item["predictions"]))
    np.testing.assert_array_equal(output.label_ids, np.asarray(table["timestamps"]))
    # Without ground truth: the same moments, no labels and no scores.
    unlabelled = table.map(lambda row: {"timestamps": None})
    blind = trainer.predict(unlabelled, metric_key_prefix="blind")
    assert blind.label_ids is None and list(blind.metrics) == ["blind_runtime"]
    for moments, expected in zip(blind.predictions, output.predictions, strict=True):
        np.testing.assert_array_equal(moments, expected)
    with pytest.raises(ValueError, match="No query of `eval_dataset` has `timestamps`"):
        trainer.evaluate(unlabelled)
    # Integer ids: read as their strings, the same results.
    numbered = table.remove_columns("query_id").add_column("query_id", list(range(len(table))))
    output_numbered = trainer.predict(numbered)
    assert [item["query_id"] for item in trainer.last_predictions] == [str(index) for index in range(len(table))]
    for moments, expected in zip(output_numbered.predictions, output.predictions, strict=True):
        np.testing.assert_array_equal(moments, expected)
    assert {key: value for key, value in output_numbered.metrics.items() if key != "test_runtime"} == {
        key: value for key, value in output.metrics.items() if key != "test_runtime"
    }


def test_evaluate_and_predict_reject_the_training_dataset_of_windows(tiny_dataset, tmp_path):
    trainer = make_trainer(tiny_dataset, tmp_path)
    missing = re.escape(str(list(training_rgnet.REQUIRED_QUERY_COLUMNS)))
    for call, argument in ((trainer.predict, "test_dataset"), (trainer.evaluate, "eval_dataset")):
        with pytest.raises(ValueError, match=f"`{argument}` must be a query table") as error:
            call(trainer.train_dataset)
        assert re.search(f"lacks {missing}", str(error.value))
        assert "The training dataset of windows (`RGNetTrainingDataset`" in str(error.value)
        assert "is not a query table" in str(error.value)
        with pytest.raises(ValueError, match="lacks \\['video_id'\\]"):
            call(trainer.eval_dataset.remove_columns("video_id"))
    # What the message suggests: the training dataset's query table.
    assert trainer.predict(trainer.train_dataset.queries).metrics["test_num_queries"] == 16


def test_unknown_recipe_is_rejected():
    assert get_recipe("ego4d-finetune").learning_rate == 1e-5
    with pytest.raises(ValueError, match="Unknown recipe 'charades'"):
        get_recipe("charades")


# ---- scripts ----

TINY_FLAGS = [item for key, value in TINY_CONFIG.items() for item in (f"--{key}", json.dumps(value))]


def script_flags(dataset_dir, output_dir, *extra):
    return [
        "--dataset_dir",
        str(dataset_dir),
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "true",
        "--per_device_train_batch_size",
        "4",
        "--num_train_epochs",
        "1",
        "--save_strategy",
        "no",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--dropout",
        "0",
        "--input_dropout",
        "0",
        *TINY_FLAGS,
        *extra,
    ]


def test_train_and_evaluate_scripts_end_to_end(tiny_dataset, tmp_path, capsys, caplog):
    metrics = train_rgnet.main(
        script_flags(
            tiny_dataset,
            tmp_path / "run",
            "--recipe",
            "ego4d_naq_pretrain",
            "--eval_split",
            "validation",
            "--learning_rate",
            "1e-3",
        )
    )
    assert "eval_R@1,IoU=0.3" in metrics and "train_loss" in metrics
    printed = capsys.readouterr().out  # the final metrics are shown, not only written
    assert "***** eval metrics *****" in printed and re.search(r"eval_R@1,IoU=0\.3\s+=", printed)
    saved = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "processor_config.json", "train_results.json"):
        assert (saved / name).is_file(), name
    config = RGNetConfig.from_pretrained(saved)
    assert config.hidden_size == 32 and config.retrieval_loss_weight == 1.0  # recipe + override
    # Finetuning from the pretraining output with the finetune recipe (paired negatives).
    train_rgnet.main(
        script_flags(tiny_dataset, tmp_path / "finetune", "--recipe", "ego4d_finetune", "--init_from", str(saved))
    )
    assert RGNetConfig.from_pretrained(tmp_path / "finetune").pair_mode == "paired_negative"
    results = evaluate_rgnet.main(
        [
            "--model",
            str(saved),
            "--dataset_dir",
            str(tiny_dataset),
            "--split",
            "validation",
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert results == json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and len(rows[0]["predicted_times"][0]) == 5
    # A folder of `model.save_pretrained` alone: the processor comes from the config's settings, the same metrics.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(saved / name, bare / name)
    flags = ["--dataset_dir", str(tiny_dataset), "--split", "validation", "--output_dir", str(tmp_path / "eval-bare")]
    assert evaluate_rgnet.main(["--model", str(bare), *flags]) == results
    # Again into the same folder: the earlier files are replaced, and the log says so.
    with caplog.at_level("INFO", logger="evaluate_rgnet"):
        assert evaluate_rgnet.main(["--model", str(bare), *flags]) == results
    assert "replacing the earlier" in caplog.text and "predictions.jsonl" in caplog.text


def test_train_script_with_torch_compile_trains_as_eager(tiny_dataset, tmp_path, fresh_compiler):
    """`--torch_compile true` (the Trainer's flag; accelerate compiles the model for training, evaluation runs the
    unwrapped model): the same training losses as eager training without dropout. The `aot_eager` backend traces
    forward and backward as inductor would, in seconds; `tests/test_devices.py` runs inductor itself."""
    from torch._dynamo.utils import counters

    losses = {}
    for compiled in (False, True):
        flags = ["--torch_compile", "true", "--torch_compile_backend", "aot_eager"] if compiled else []
        counters.clear()
        metrics = train_rgnet.main(
            script_flags(tiny_dataset, tmp_path / f"run-{compiled}", "--recipe", "ego4d_naq_pretrain", *flags)
        )
        assert (counters["stats"]["unique_graphs"] > 0) == compiled
        losses[compiled] = metrics["train_loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--recipe", "charades"], "Unknown recipe"),
        (["--train_split", "nope"], "no split 'nope'"),
        (["--video_feature_dim", "32"], "video_feature_dim"),
        (["--bogus_flag", "1"], "bogus_flag"),
        (["--dropout"], "`--dropout` \\(an RGNetConfig field\\) needs a value"),
        (["--use_auxiliary_loss", "maybe"], "`--use_auxiliary_loss` expects a boolean"),
        (["--hidden_size", "32.5"], "`--hidden_size` expects an integer, got '32.5'"),
        (["--dropout", "high"], "`--dropout` expects a number, got 'high'"),
    ],
)
def test_train_script_rejects_bad_setups_before_training(tiny_dataset, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train_rgnet.main(script_flags(tiny_dataset, tmp_path / "run", *extra))
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_train_script_writes_to_a_directory_named_after_its_recipe_by_default():
    _, training_args, _ = train_rgnet.parse_arguments(["--recipe", "ego4d_finetune", "--dataset_dir", "unused"])
    assert Path(training_args.output_dir) == Path("runs", "rgnet-ego4d_finetune")
    assert training_args.learning_rate == get_recipe("ego4d_finetune").learning_rate
    _, training_args, _ = train_rgnet.parse_arguments(["--dataset_dir", "unused", "--output_dir", "elsewhere"])
    assert training_args.output_dir == "elsewhere"


def test_train_script_parses_config_values_by_the_field_type():
    overrides = train_rgnet._parse_config_overrides(
        [
            *("--use_auxiliary_loss", "False", "--scale_matching_by_window_score", "YES"),
            *("--emulate_text_mask_head_ordering", "0", "--hidden_size", "64", "--dropout", "0.25"),
            *("--window_stride", "none", "--pair_mode", "paired_negative", "--query_normalization", '"ego4d"'),
            "--input_dropout=0",
            *("--max-text-tokens", "12", "--window-stride=none"),  # either spelling, as every other flag
        ]
    )
    assert overrides == {
        "use_auxiliary_loss": False,
        "scale_matching_by_window_score": True,
        "emulate_text_mask_head_ordering": False,
        "hidden_size": 64,
        "dropout": 0.25,
        "window_stride": None,
        "pair_mode": "paired_negative",
        "query_normalization": "ego4d",
        "input_dropout": 0,
        "max_text_tokens": 12,
    }
    for value in ("true", "TRUE", "yes", "1"):
        assert train_rgnet._parse_config_overrides(["--use_auxiliary_loss", value]) == {"use_auxiliary_loss": True}
    for value in ("false", "No", "0"):
        assert train_rgnet._parse_config_overrides(["--use_auxiliary_loss", value]) == {"use_auxiliary_loss": False}
    config = train_rgnet.build_config(
        train_rgnet.RGNetScriptArguments(dataset_dir="unused", recipe="mad"),
        train_rgnet._parse_config_overrides(["--use_auxiliary_loss", "False"]),
    )
    assert config.use_auxiliary_loss is False


def test_queries_without_timestamps_are_left_out_of_the_metrics_with_a_warning(caplog):
    from datasets import Dataset

    queries = Dataset.from_dict({"query_id": ["a", "b", "c"], "timestamps": [[1.0, 3.0], None, [0.0, 2.0]]})
    predictions = [
        {"query_id": query_id, "predictions": [[1.0, 3.0, 0.9], [0.0, 2.0, 0.5]], "window_ranking": [0, 1]}
        for query_id in ("a", "b", "c")
    ]
    processor = RGNetProcessor(max_window_frames=16, seconds_per_frame=0.5)
    with caplog.at_level("WARNING"):
        results = training_rgnet.score_predictions(predictions, queries, processor, "ego4d")
    assert results["num_queries"] == 2 and results["R@1,IoU=0.5"] == 0.5
    assert "1 of 3 evaluated queries have no `timestamps` and are not scored" in caplog.text
    with pytest.raises(ValueError, match="No evaluated query has `timestamps`"):
        training_rgnet.score_predictions(predictions[1:2], queries, processor, "ego4d")


def test_train_script_names_the_setting_behind_an_empty_or_unevaluated_run(tiny_dataset, tmp_path):
    flags = script_flags(tiny_dataset, tmp_path / "run")
    with pytest.raises(ValueError, match="`--eval_strategy epoch` needs `--eval_split`"):
        train_rgnet.main([*flags, "--eval_strategy", "epoch"])
    # Trainer flags this script does not use are refused, not ignored (before anything is loaded or trained).
    with pytest.raises(ValueError, match=r"`--per_device_eval_batch_size 4` is not used: .*`--eval_pairs_per_batch`"):
        train_rgnet.main([*flags, "--per_device_eval_batch_size", "4"])
    with pytest.raises(ValueError, match=r"`--do_predict` is not used .*scripts/evaluate_rgnet.py"):
        train_rgnet.main([*flags, "--do_predict", "true"])
    with pytest.raises(ValueError, match="`--do_eval` needs `--eval_split`"):
        train_rgnet.main([*flags, "--do_eval", "true"])
    assert not (tmp_path / "run").exists()
    # 16 training queries: a batch of 32 leaves no whole batch (the Trainer's own error would speak of max_steps).
    with pytest.raises(ValueError, match=r"16 queries, fewer than one batch .*\(32\) x 1 process"):
        train_rgnet.main([*flags, "--per_device_train_batch_size", "32"])


def test_train_script_command_line_prints_its_errors_without_a_traceback(tmp_path):
    script = str(REPO_ROOT / "scripts" / "train_rgnet.py")
    command = [sys.executable, script, "--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "run")]
    result = subprocess.run([*command, "--dropout"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "train_rgnet.py: error: `--dropout` (an RGNetConfig field) needs a value" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_script_takes_the_architecture_of_its_init_checkpoint(tiny_dataset, tmp_path):
    other = RGNetConfig(
        **{**TINY_CONFIG, "hidden_size": 16, "num_decoder_layers": 1, "selector_attention_mode": "hard_mask"}
    )
    RGNetForVideoGrounding(other).save_pretrained(tmp_path / "other")
    # Flags that ask for another architecture than the checkpoint's: an error naming them (TINY_FLAGS hold 32 and 2).
    flags = script_flags(tiny_dataset, tmp_path / "run", "--recipe", "ego4d_finetune")
    with pytest.raises(ValueError, match="drop --hidden_size 32 --num_decoder_layers 2 \\(the checkpoint's arch"):
        train_rgnet.main([*flags, "--init_from", str(tmp_path / "other")])
    # Without them, the checkpoint's architecture and weights, the recipe's training settings.
    architecture = set(train_rgnet.ARCHITECTURE_FIELDS)
    kept = [
        item
        for key, value in TINY_CONFIG.items()
        if key not in architecture
        for item in (f"--{key}", json.dumps(value))
    ]
    flags = script_flags(tiny_dataset, tmp_path / "run")[: -len(TINY_FLAGS)] + kept  # TINY_FLAGS come last
    start = RGNetForVideoGrounding.from_pretrained(tmp_path / "other")
    # Learning rate 0 (AdamW's decay is scaled by it too): the saved weights are the checkpoint's, not a new init.
    train_rgnet.main(
        [*flags, "--recipe", "ego4d_finetune", "--init_from", str(tmp_path / "other"), "--learning_rate", "0"]
    )
    config = RGNetConfig.from_pretrained(tmp_path / "run")
    assert (config.hidden_size, config.num_decoder_layers, config.pair_mode) == (16, 1, "paired_negative")
    assert config.max_window_frames == TINY_CONFIG["max_window_frames"]
    assert config.selector_attention_mode == "hard_mask"  # no weights of its own, but the function they compute
    trained = RGNetForVideoGrounding.from_pretrained(tmp_path / "run")
    assert trained.state_dict().keys() == start.state_dict().keys()
    for name, tensor in start.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="`--text_config` cannot be combined with `--init_from`"):
        train_rgnet.main([*flags, "--init_from", str(tmp_path / "other"), "--text_config", "{}"])


def word_tokenizer(words):
    """A word-level tokenizer with CLIP's start and end tokens around each query."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = {"<pad>": 0, "<sot>": 1, "<eot>": 2, "<unk>": 3, **{word: 4 + i for i, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<sot> $A <eot>", special_tokens=[("<sot>", 1), ("<eot>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<sot>", eos_token="<eot>", unk_token="<unk>"
    )


def test_train_script_trains_a_model_with_a_text_encoder_from_its_folder(tiny_dataset, tmp_path):
    """The `query` column goes through the tokenizer saved with the model; the text encoder stays frozen."""
    from transformers import CLIPTextConfig

    queries, _ = load_rgnet_dataset(tiny_dataset)
    words = sorted({word for split in queries.values() for query in split["query"] for word in query.split()})
    tokenizer = word_tokenizer(words)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_CONFIG["text_feature_dim"],
        intermediate_size=32,
        num_hidden_layers=0,
        num_attention_heads=1,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = RGNetConfig(**TINY_CONFIG, text_config=text_config)
    start = RGNetForVideoGrounding(config)
    start.save_pretrained(tmp_path / "init")
    flags = [*script_flags(tiny_dataset, tmp_path / "run", "--eval_split", "validation"), "--learning_rate", "1e-2"]
    with pytest.raises(ValueError, match=r"there is no tokenizer \(`--init_from` .* holds none\)"):
        train_rgnet.main([*flags, "--init_from", str(tmp_path / "init")])
    RGNetProcessor.from_config(config, tokenizer).save_pretrained(tmp_path / "init")
    metrics = train_rgnet.main([*flags, "--init_from", str(tmp_path / "init")])
    assert "eval_R@1,IoU=0.3" in metrics  # evaluation tokenized the validation queries too
    trained = RGNetForVideoGrounding.from_pretrained(tmp_path / "run")
    assert not any(weight.requires_grad for weight in trained.model.text_encoder.parameters())
    for name, tensor in start.state_dict().items():
        if name.startswith("model.text_encoder."):
            torch.testing.assert_close(trained.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert not torch.equal(trained.model.anchor_embeddings, start.model.anchor_embeddings)
    assert RGNetProcessor.from_pretrained(tmp_path / "run").tokenizer is not None


# ---- multi-process training ----


def free_port():
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def run_two_process_launch(launch, flags, *, output_dir, env, cwd):
    """Runs `accelerate launch … train_rgnet.py flags`, keeping its output for the failure message.

    Gloo's TCP transport on a loaded CPU machine has (rarely) aborted a worker with SIGABRT from one of its
    background threads, outside anything this project runs. What this test checks is numerical equivalence,
    so a launch whose first failing worker died by a signal is run once more, on a fresh port and a clean
    output folder; any other failure, or a second abort, fails with the tail of the workers' output.
    """
    script = str(REPO_ROOT / "scripts" / "train_rgnet.py")
    for attempt in range(2):
        shutil.rmtree(output_dir, ignore_errors=True)  # the per-process logs append
        command = [*launch, "--main_process_port", str(free_port()), script, *flags]
        result = subprocess.run(command, env=env, cwd=cwd, timeout=600, capture_output=True, text=True)
        if result.returncode == 0:
            return
        _, found, root_cause = result.stderr.rpartition("Root Cause")
        if attempt == 1 or not found or not re.search(r"exitcode\s*:\s*-\d+", root_cause):
            break
    raise AssertionError(
        f"accelerate launch exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )


def test_two_process_training_matches_single_process_with_the_same_global_batch(tiny_dataset, tmp_path):
    """2 CPU processes × 2 queries vs 1 process × 2 queries × 2 accumulation steps: the same micro-batches, the same
    gate noise (seeded per pair), dropout off; DDP averages the gradients the way accumulation does."""
    common = [
        "--recipe",
        "mad",
        "--num_train_epochs",
        "2",
        "--learning_rate",
        "1e-3",
        "--lr_drop_epochs",
        "1",
        "--per_process_log",
        "true",
        "--seed",
        "7",
    ]
    # GLOO_SOCKET_IFNAME keeps gloo on the loopback device whatever the host name resolves to.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo"}
    flags = script_flags(tiny_dataset, tmp_path / "ddp", *common)
    flags[flags.index("--per_device_train_batch_size") + 1] = "2"
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    run_two_process_launch(launch, flags, output_dir=tmp_path / "ddp", env=env, cwd=tmp_path)
    single = script_flags(tiny_dataset, tmp_path / "single", *common, "--gradient_accumulation_steps", "2")
    single[single.index("--per_device_train_batch_size") + 1] = "2"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "train_rgnet.py"), *single],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )

    logs = [
        [json.loads(line) for line in (tmp_path / "ddp" / f"process_{rank}_log.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    ]
    single_logs = [json.loads(line) for line in (tmp_path / "single" / "process_0_log.jsonl").read_text().splitlines()]
    # Every rank logs the global loss and loss terms (the mean over both processes' micro-batches), which the single
    # process logs as the mean over its two accumulated micro-batches.
    for term in ("loss", "loss_span", "loss_saliency", "loss_retrieval", "class_error"):
        ddp_terms = [[log[term] for log in rank_logs if "loss" in log] for rank_logs in logs]
        assert len(ddp_terms[0]) == 8 and ddp_terms[0] == ddp_terms[1], term
        single_terms = [log[term] for log in single_logs if "loss" in log]
        np.testing.assert_allclose(ddp_terms[0], single_terms, rtol=1e-4, atol=1e-5, err_msg=term)
    ddp_weights = load_file(tmp_path / "ddp" / "model.safetensors")
    for name, value in load_file(tmp_path / "single" / "model.safetensors").items():
        torch.testing.assert_close(ddp_weights[name], value, atol=2e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_post_processing_worker_keeps_order_one_call_in_flight_and_raises_errors():
    def work(value):
        return value * value, threading.current_thread().name

    inline = PostProcessingWorker(background=False)
    assert inline.submit("a", work, 3) == [("a", (9, threading.current_thread().name))]  # at once, here
    assert inline.finish() == []
    with PostProcessingWorker(background=True) as worker:
        assert worker.submit(0, work, 0) == []  # running beside the caller
        finished = []
        for value in range(1, 20):
            finished += worker.submit(value, work, value)  # the call before this one
            assert len(finished) == value
        finished += worker.finish()
    assert [key for key, _ in finished] == list(range(20))
    assert all(result == (key * key, result[1]) and result[1].startswith("rgnet-post") for key, result in finished)
    for background in (False, True):
        with PostProcessingWorker(background=background) as worker, pytest.raises(ZeroDivisionError):
            worker.submit("bad", lambda: 1 / 0)
            worker.submit("next", work, 1)  # the error surfaces here at the latest, not at the end of a long run


def test_evaluate_script_tunes_the_allocator_only_when_asked(monkeypatch, tmp_path, capsys):
    class Tuned(Exception):
        pass

    def tune():
        raise Tuned  # stop before loading a model: only the wiring is under test

    monkeypatch.setattr(evaluate_rgnet, "retain_freed_host_memory", tune)
    flags = ["--model", str(tmp_path / "none"), "--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(Tuned):
        evaluate_rgnet.main([*flags, "--retain_freed_cpu_memory"])
    with pytest.raises(ValueError, match=r"`--model` .* \(no config.json\)"):  # without the flag: to the model folder
        evaluate_rgnet.main(flags)
    with pytest.raises(SystemExit):
        evaluate_rgnet.main([*flags, "--pairs_per_batch", "0"])
    assert "--pairs_per_batch must be >= 1" in capsys.readouterr().err


def test_evaluate_script_checks_its_flags_before_loading(monkeypatch, tmp_path, capsys):
    def load(*args, **kwargs):
        raise AssertionError("flags must be checked before anything is loaded")

    monkeypatch.setattr(RGNetForVideoGrounding, "from_pretrained", load)
    monkeypatch.setattr(evaluate_rgnet, "retain_freed_host_memory", load)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    flags = ["--model", str(tmp_path / "model"), "--dataset_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")]
    flags.append("--retain_freed_cpu_memory")
    with pytest.raises(SystemExit):
        evaluate_rgnet.main([*flags, "--device", "cpu", "--max_predictions", "0"])
    assert "--max_predictions must be >= 1" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        evaluate_rgnet.main([*flags, "--device", "cuda:7"])
    assert "--device cuda:7: CUDA is not available here" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit):
        evaluate_rgnet.main([*flags, "--device", "cuda:7"])
    assert "--device cuda:7: this machine has 2 CUDA device(s), cuda:0 to cuda:1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_rgnet.main([*flags, "--device", "gpu"])
    assert "--device gpu: not a torch device" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="before anything is loaded"):  # valid flags: on to loading
        evaluate_rgnet.main([*flags, "--device", "cuda:1", "--max_predictions", "5"])


@pytest.mark.parametrize(("mode", "expected"), [("default", None), ("reduce-overhead", "reduce-overhead")])
def test_evaluate_script_passes_its_compile_mode(tiny_dataset, monkeypatch, tmp_path, capsys, mode, expected):
    """`--torch_compile_mode` is torch.compile's `mode` (`default`: none, as before), and needs `--torch_compile`.
    Loading and compiling are stubbed out: only the wiring is under test."""

    class Compiled(Exception):
        pass

    calls = []

    def compile_stub(module, **kwargs):
        calls.append(kwargs)
        raise Compiled  # stop before the evaluation

    def load(*args, **kwargs):
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(RGNetForVideoGrounding, "from_pretrained", load)
    monkeypatch.setattr(torch, "compile", compile_stub)
    RGNetConfig(**TINY_CONFIG).save_pretrained(tmp_path / "model")  # a model folder's config, no weights needed
    flags = [
        "--model",
        str(tmp_path / "model"),
        "--dataset_dir",
        str(tiny_dataset),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    flags += ["--split", "validation", "--device", "cpu", "--torch_compile_mode", mode]
    with pytest.raises(Compiled):
        evaluate_rgnet.main([*flags, "--torch_compile"])
    assert calls == [{"backend": "inductor", "dynamic": True, "mode": expected}]
    if mode != "default":
        with pytest.raises(SystemExit):
            evaluate_rgnet.main(flags)
        assert f"--torch_compile_mode {mode} needs --torch_compile" in capsys.readouterr().err
        with pytest.raises(SystemExit):  # a mode of inductor's, not of another backend
            evaluate_rgnet.main([*flags, "--torch_compile", "--torch_compile_backend", "eager"])
        assert (
            "--torch_compile_mode is an inductor option; --torch_compile_backend is eager" in capsys.readouterr().err
        )
        assert len(calls) == 1


def test_evaluate_script_with_bfloat16_weights_and_torch_compile(tiny_dataset, tmp_path, fresh_compiler, monkeypatch):
    """`--torch_compile` (dynamic shapes: chunks of 27 and 9 pairs) predicts what eager inference does, the factored
    selector attention included (windows of 17 tokens, hidden size 8); `--dtype bfloat16` evaluates a bfloat16 model,
    compiled or not. `aot_eager` traces as inductor would, in seconds."""
    from torch._dynamo.utils import counters

    evaluated = []
    predict = evaluate_rgnet.predict_long_videos

    def spy(model, *args, **kwargs):
        evaluated.append((isinstance(model, torch._dynamo.eval_frame.OptimizedModule), model.dtype))
        return predict(model, *args, **kwargs)

    monkeypatch.setattr(evaluate_rgnet, "predict_long_videos", spy)
    torch.manual_seed(0)
    config = RGNetConfig(**{**TINY_CONFIG, "hidden_size": 8, "num_attention_heads": 2})
    RGNetForVideoGrounding(config).save_pretrained(tmp_path / "model")
    RGNetProcessor.from_config(config).save_pretrained(tmp_path / "model")
    flags = ["--model", str(tmp_path / "model"), "--dataset_dir", str(tiny_dataset), "--split", "validation"]
    flags += ["--pairs_per_batch", "27"]  # 3 queries × 9 windows per chunk, then the video's last query alone

    def evaluate(name, *extra):
        metrics = evaluate_rgnet.main([*flags, "--output_dir", str(tmp_path / name), *extra])
        rows = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        return metrics, [json.loads(row) for row in rows]

    compile_flags = ("--torch_compile", "--torch_compile_backend", "aot_eager")
    with pytest.MonkeyPatch.context() as patch:  # eager float32 CPU inference as compiled code runs it (addmm)
        patch.setattr(torch.backends.mkldnn, "enabled", False)
        metrics, rows = evaluate("eager")
    counters.clear()
    compiled_metrics, compiled_rows = evaluate("compiled", *compile_flags)
    assert counters["stats"]["unique_graphs"] > 0
    assert compiled_metrics == pytest.approx(metrics)
    for row, expected in zip(compiled_rows, rows, strict=True):
        assert row["window_ranking"] == expected["window_ranking"]
        np.testing.assert_allclose(row["predicted_times"], expected["predicted_times"], atol=1e-4)
    for name, extra in (("bf16", ()), ("bf16-compiled", compile_flags)):
        bf16_metrics, bf16_rows = evaluate(name, "--dtype", "bfloat16", *extra)
        assert set(bf16_metrics) == set(metrics) and len(bf16_rows) == len(rows)
        assert all(math.isfinite(value) for value in bf16_metrics.values())
    assert evaluated == [
        (False, torch.float32),
        (True, torch.float32),
        (False, torch.bfloat16),
        (True, torch.bfloat16),
    ]


@pytest.mark.parametrize("pair_mode", ["cross_pairs", "paired_negative"])
def test_trainer_counts_flops_per_pair_and_frame(tiny_dataset, tmp_path, pair_mode):
    trainer = make_trainer(tiny_dataset, tmp_path, pair_mode=pair_mode)
    batch = next(iter(trainer.get_train_dataloader()))
    num_pairs = 16 if pair_mode == "cross_pairs" else 8  # B = 4: B² cross pairs, or B positives + B negatives
    if pair_mode == "cross_pairs":  # each window once
        assert batch["video_features"].shape[0] == 4 and len(batch["video_pair_index"]) == num_pairs
    parameters = trainer.model.num_parameters(exclude_embeddings=True)
    frames = batch["video_mask"].shape[-1]
    assert trainer.floating_point_ops(batch) == 6 * num_pairs * frames * parameters


def test_dataset_config_mismatches_name_the_setting_to_change(tiny_dataset):
    queries, store = load_rgnet_dataset(tiny_dataset)
    table = queries["train"]
    config = RGNetConfig(**TINY_CONFIG)
    check_dataset_matches_config(table, store, config)  # the tiny dataset and config agree
    width = len(table[0]["text_features"][0])
    cases = [
        (  # the sentence embedding has the frames' width (a config check)
            {"video_feature_dim": store.feature_dim + 1, "pooled_text_dim": store.feature_dim + 1},
            f"--video_feature_dim {store.feature_dim}",
        ),
        ({"text_feature_dim": width + 1}, f"--text_feature_dim {width}"),
        ({"seconds_per_frame": 2 * config.seconds_per_frame}, "--seconds_per_frame"),
    ]
    for override, match in cases:
        with pytest.raises(ValueError, match=match):
            check_dataset_matches_config(table, store, RGNetConfig(**{**TINY_CONFIG, **override}))
    with pytest.raises(ValueError, match="Set `seconds_per_frame="):
        bad = RGNetConfig(**{**TINY_CONFIG, "seconds_per_frame": 2 * config.seconds_per_frame})
        check_dataset_matches_config(table, store, bad, flags=False)
    # Every mismatch in one message, with every flag to pass.
    every = {**cases[0][0], **cases[1][0], **cases[2][0]}
    with pytest.raises(ValueError) as error:
        check_dataset_matches_config(table, store, RGNetConfig(**{**TINY_CONFIG, **every}))
    recorded = store.metadata["seconds_per_frame"]
    expected = (
        f"Pass --video_feature_dim {store.feature_dim} --text_feature_dim {width} --seconds_per_frame {recorded}."
    )
    assert str(error.value).endswith(expected) and str(error.value).count("; ") == 2


def test_evaluate_script_checks_its_output_dir_before_loading(tiny_dataset, monkeypatch, tmp_path):
    """An `--output_dir` that is a file was refused only after the whole evaluation, with a FileExistsError
    traceback: it is now checked, and a new folder made, before the model loads."""

    def load(*args, **kwargs):
        raise AssertionError("the output folder must be checked before the model loads")

    monkeypatch.setattr(RGNetForVideoGrounding, "from_pretrained", load)
    RGNetConfig(**TINY_CONFIG).save_pretrained(tmp_path / "model")
    (tmp_path / "a_file").write_text("x")
    flags = ["--model", str(tmp_path / "model"), "--dataset_dir", str(tiny_dataset), "--split", "validation"]
    flags += ["--device", "cpu"]
    with pytest.raises(ValueError, match="`--output_dir` '.*a_file' exists and is not a folder"):
        evaluate_rgnet.main([*flags, "--output_dir", str(tmp_path / "a_file")])
    with pytest.raises(ValueError, match="`--output_dir` '.*a_file/eval' cannot be created"):
        evaluate_rgnet.main([*flags, "--output_dir", str(tmp_path / "a_file" / "eval")])
    with pytest.raises(AssertionError, match="before the model loads"):
        evaluate_rgnet.main([*flags, "--output_dir", str(tmp_path / "new" / "eval")])
    assert (tmp_path / "new" / "eval").is_dir()


# ---- the scripts' output folders, checkpoints and model folders ----


def test_train_script_keeps_an_earlier_run_unless_resumed_or_overwritten(tiny_dataset, tmp_path, monkeypatch):
    """A second run into the same `--output_dir` once replaced the model silently and mixed its checkpoints with the
    earlier run's (which `--save_total_limit` then deleted as its own); `--resume_from_checkpoint true` looked for a
    folder named "true"."""
    run = tmp_path / "run"
    flags = script_flags(tiny_dataset, run, "--recipe", "ego4d_naq_pretrain")
    flags[flags.index("--save_strategy") + 1] = "steps"
    flags += ["--save_steps", "2"]  # 16 queries in batches of 4: checkpoints 2 and 4
    train_rgnet.main(flags)
    assert sorted(path.name for path in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    with pytest.raises(ValueError, match=r"`--output_dir` .*run holds an earlier run \(checkpoint-2, checkpoint-4, "):
        train_rgnet.main(flags)
    resumed = []
    original_train = RGNetTrainer.train

    def train(self, resume_from_checkpoint=None, **kwargs):
        resumed.append(resume_from_checkpoint)
        return original_train(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(RGNetTrainer, "train", train)
    train_rgnet.main([*flags, "--resume_from_checkpoint", "true"])
    assert resumed == [str(run / "checkpoint-4")]  # the last checkpoint of the folder
    with pytest.raises(ValueError, match=r"`--resume_from_checkpoint last`: `--output_dir` .* holds no checkpoint"):
        train_rgnet.main([*script_flags(tiny_dataset, tmp_path / "new"), "--resume_from_checkpoint", "last"])
    # Another architecture than the checkpoint's: named before anything trains.
    with pytest.raises(ValueError, match=r"another architecture .*'hidden_size': \(32, 16\)"):
        train_rgnet.main([*flags, "--resume_from_checkpoint", "last", "--hidden_size", "16"])
    (run / "checkpoint-4" / "marker").write_text("earlier run")
    with pytest.raises(ValueError, match="no split 'nope'"):  # a run that does not start deletes nothing
        train_rgnet.main([*flags, "--overwrite_output_dir", "true", "--train_split", "nope"])
    assert (run / "checkpoint-4" / "marker").exists()
    train_rgnet.main([*flags, "--overwrite_output_dir", "true", "--save_steps", "3"])
    assert sorted(path.name for path in run.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert not (run / "checkpoint-4" / "marker").exists()  # the earlier run's checkpoint was deleted, not reused
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="`--output_dir` .*a_file exists and is not a directory"):
        train_rgnet.main(script_flags(tiny_dataset, tmp_path / "a_file"))


def test_train_script_does_not_evaluate_the_final_weights_twice(tiny_dataset, tmp_path, monkeypatch):
    evaluations = []
    original_evaluate = RGNetTrainer.evaluate

    def evaluate(self, *args, **kwargs):
        evaluations.append(self.state.global_step)
        return original_evaluate(self, *args, **kwargs)

    monkeypatch.setattr(RGNetTrainer, "evaluate", evaluate)
    flags = script_flags(
        tiny_dataset, tmp_path / "run", "--recipe", "ego4d_naq_pretrain", "--eval_split", "validation"
    )
    metrics = train_rgnet.main([*flags, "--eval_strategy", "epoch", "--num_train_epochs", "2"])
    assert evaluations == [4, 8]  # once per epoch; the last one is the final weights'
    assert (
        metrics["eval_R@1,IoU=0.3"]
        == json.loads((tmp_path / "run" / "train_results.json").read_text())["eval_R@1,IoU=0.3"]
    )
    evaluations.clear()
    train_rgnet.main(script_flags(tiny_dataset, tmp_path / "other", "--eval_split", "validation"))
    assert evaluations == [4]  # no evaluation during training: one at the end


def test_train_script_takes_only_rgnet_config_fields_as_overrides():
    """`--dtype bfloat16` was accepted and ignored (training ran in float32), `--return_dict false` broke the first
    step: the generic `PreTrainedConfig` fields are not the model's settings."""
    for flag in ("--dtype", "--return_dict", "--id2label"):
        with pytest.raises(ValueError, match=f"Unknown argument '{flag}'"):
            train_rgnet._parse_config_overrides([flag, "x"])


def test_dataset_checks_name_the_sentence_embedding_width_and_a_checkpoints_feature_widths(tiny_dataset):
    queries, store = load_rgnet_dataset(tiny_dataset)
    table = queries["validation"]
    narrow = table.remove_columns("sentence_embedding").add_column(
        "sentence_embedding", [[0.5] * (store.feature_dim - 1)] * len(table)
    )
    with pytest.raises(ValueError, match=rf"`sentence_embedding` column is {store.feature_dim - 1}-d but its frame"):
        check_dataset_matches_config(narrow, store, RGNetConfig(**TINY_CONFIG))
    # With `--init_from`, the feature widths are the checkpoint's: passing the flag it once suggested is refused.
    wide = RGNetConfig(
        **{**TINY_CONFIG, "video_feature_dim": store.feature_dim + 1, "pooled_text_dim": store.feature_dim + 1}
    )
    with pytest.raises(ValueError, match=r"`--init_from` runs/x was made for other features \(video_feature_dim\)"):
        check_dataset_matches_config(table, store, wide, init_from="runs/x")


def test_evaluate_script_names_a_model_folder_it_cannot_use_before_loading_data(tiny_dataset, tmp_path):
    flags = ["--dataset_dir", str(tiny_dataset), "--split", "validation", "--output_dir", str(tmp_path / "eval")]
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match=r"`--model` '.*clip' holds a 'clip' model, not an RGNet model"):
        evaluate_rgnet.main(["--model", str(tmp_path / "clip"), *flags])
    RGNetConfig(**{**TINY_CONFIG, "seconds_per_frame": 9.0}).save_pretrained(tmp_path / "other_rate")
    with pytest.raises(ValueError, match="seconds_per_frame"):
        evaluate_rgnet.main(["--model", str(tmp_path / "other_rate"), *flags])
    assert not (tmp_path / "eval").exists()  # refused before the output folder is made
    RGNetConfig(**TINY_CONFIG).save_pretrained(tmp_path / "no_weights")
    with pytest.raises(ValueError, match=r"`--model` '.*no_weights': the model's weights cannot be loaded"):
        evaluate_rgnet.main(["--model", str(tmp_path / "no_weights"), *flags])


def test_long_video_inference_counts_its_progress_in_queries(tiny_dataset, capsys):
    """The bar once advanced per video, which on MAD means minutes without a tick on a CPU."""
    queries, store = load_rgnet_dataset(tiny_dataset)
    validation = queries["validation"]
    config = RGNetConfig(**{**TINY_CONFIG, "query_normalization": "ego4d"})
    model, processor = RGNetForVideoGrounding(config).eval(), RGNetProcessor.from_config(config)
    predict_long_videos(model, processor, validation, store, pairs_per_batch=17)
    videos = len(set(validation["video_id"]))
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert re.search(rf"{len(validation)}/{len(validation)} .*query.*video {videos}/{videos}", bar), bar
