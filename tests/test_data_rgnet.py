"""Tests of the RGNet dataset layout (`data_rgnet.py`) and its converters (`scripts/prepare_*.py`).

Every source format is rebuilt in miniature in `tmp_path` in its exact original form (MAD h5 + annotation JSON,
Ego4D-NLQ v1/v2/NaQ JSON + per-clip `.pt` tensors, the original implementation's JSON Lines + LMDB of compressed
`.npz`), converted through the command-line entry points, and read back.
"""

import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_rgnet import (
    LmdbNpzReader,
    RGNetDatasetWriter,
    RGNetFeatureStore,
    clean_query_row,
    load_rgnet_dataset,
    read_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    """Import `scripts/<name>.py` as a module (scripts are CLIs, not a package API)."""
    spec = importlib.util.spec_from_file_location(f"_rgnet_test_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_features(seed, num_frames, dim):
    return np.random.default_rng(seed).standard_normal((num_frames, dim), dtype=np.float32)


def query_row(query_id, video_id, timestamps=(1.0, 2.0), duration=10.0, **extra):
    return {
        "query_id": query_id,
        "query": f"query {query_id}",
        "video_id": video_id,
        "duration": duration,
        "timestamps": None if timestamps is None else list(timestamps),
        **extra,
    }


# ---------------------------------------------------------------------------------------------------------------
# Writer and feature store
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_dataset(tmp_path):
    """Four videos spread over several shards, a train split with text features and a test split without."""
    videos = {f"video_{index}": random_features(index, 30 + 17 * index, 6) for index in range(4)}
    rng = np.random.default_rng(99)
    train_rows = [
        query_row(
            f"q{index}",
            f"video_{index % 4}",
            text_features=rng.standard_normal((2 + index, 5)).astype(np.float32),
            sentence_embedding=rng.standard_normal(3).astype(np.float32),
        )
        for index in range(6)
    ]
    test_rows = [query_row("t0", "video_3", timestamps=None)]
    root = tmp_path / "dataset"
    with RGNetDatasetWriter(root, max_shard_bytes=60 * 6 * 4, metadata={"seconds_per_frame": 0.2}) as writer:
        writer.add_queries("train", train_rows)  # rows may come before their videos
        for video_id, features in videos.items():
            writer.add_video(video_id, features)
        writer.add_queries("test", test_rows)
    return root, videos, train_rows, test_rows


def test_round_trip_features_are_bit_identical_across_shards(small_dataset):
    root, videos, _, _ = small_dataset
    queries, store = load_rgnet_dataset(root)
    assert store.feature_dim == 6
    assert store.video_ids == tuple(videos)
    assert store.metadata == {"seconds_per_frame": 0.2}
    assert len({store.location(video_id).shard for video_id in videos}) >= 3
    for video_id, features in videos.items():
        assert store.num_frames(video_id) == len(features)
        read = store.read_video(video_id)
        assert read.dtype == np.float32 and read.flags.writeable
        assert read.tobytes() == features.tobytes()
        np.testing.assert_array_equal(store.read_frames(video_id, 5, 17), features[5:17])
        np.testing.assert_array_equal(store.memmap(video_id), features)
        assert store.read_frames(video_id, 3, 3).shape == (0, 6)
    # The shards are plain .npy files.
    shard = np.load(root / "features" / "shard-00000.npy")
    location = store.location("video_0")
    np.testing.assert_array_equal(shard[location.offset : location.offset + location.num_frames], videos["video_0"])


def test_round_trip_query_rows_and_datasets_operations(small_dataset):
    root, _, train_rows, test_rows = small_dataset
    queries, _ = load_rgnet_dataset(root)
    assert set(queries) == {"train", "test"}
    train = queries["train"].with_format("numpy")
    for expected, row in zip(train_rows, train, strict=True):
        assert row["query_id"] == expected["query_id"] and row["video_id"] == expected["video_id"]
        assert row["split"] == "train" and row["duration"] == 10.0
        np.testing.assert_array_equal(row["timestamps"], [1.0, 2.0])
        np.testing.assert_array_equal(row["text_features"], expected["text_features"])
        np.testing.assert_array_equal(row["sentence_embedding"], expected["sentence_embedding"])
    test_row = queries["test"][0]
    assert test_row["timestamps"] is None and test_row["query_id"] == test_rows[0]["query_id"]
    assert "text_features" not in queries["test"].column_names
    # Standard datasets operations keep working on the query tables.
    filtered = queries["train"].filter(lambda row: row["video_id"] == "video_1")
    assert filtered["query_id"] == ["q1", "q5"]
    mapped = queries["train"].map(lambda row: {"num_tokens": len(row["text_features"])})
    assert mapped["num_tokens"] == [2, 3, 4, 5, 6, 7]
    assert sorted(queries["train"].shuffle(seed=0)["query_id"]) == sorted(row["query_id"] for row in train_rows)


class _WindowDataset:
    """A map-style dataset of (video, start, end) windows read from the store in the worker."""

    def __init__(self, store, windows):
        self.store = store
        self.windows = windows

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, index):
        import torch

        video_id, start, end = self.windows[index]
        return torch.from_numpy(self.store.read_frames(video_id, start, end)), os.getpid()


def test_dataloader_with_two_forked_workers_reads_correct_windows(small_dataset):
    torch = pytest.importorskip("torch")
    root, videos, _, _ = small_dataset
    store = RGNetFeatureStore(root)
    store.read_frames("video_2", 0, 4)  # the parent opens its descriptors before the workers fork
    windows = [(video_id, start, start + 8) for video_id in videos for start in (0, 9, 20)]
    loader = torch.utils.data.DataLoader(
        _WindowDataset(store, windows), batch_size=2, num_workers=2, multiprocessing_context="fork"
    )
    frames, worker_pids = [], set()
    for batch, pids in loader:
        frames.extend(batch)
        worker_pids.update(pids.tolist())
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    for (video_id, start, end), window in zip(windows, frames, strict=True):
        np.testing.assert_array_equal(window.numpy(), videos[video_id][start:end])


def test_store_pickles_without_open_handles(small_dataset):
    root, videos, _, _ = small_dataset
    store = RGNetFeatureStore(root)
    store.read_frames("video_1", 0, 2)
    clone = pickle.loads(pickle.dumps(store))
    assert clone._descriptors == {}
    np.testing.assert_array_equal(clone.read_frames("video_1", 4, 9), videos["video_1"][4:9])
    store.close()
    np.testing.assert_array_equal(store.read_frames("video_1", 4, 9), videos["video_1"][4:9])


@pytest.mark.parametrize(
    ("video_id", "start", "end", "match"),
    [
        ("nope", 0, 1, "`video_id` 'nope'"),
        ("video_0", 0, 31, "outside video 'video_0'"),
        ("video_0", 5, 4, "outside video"),
        ("video_0", -1, 4, "outside video"),
        ("video_0", 1.5, 4, "`start` must be an integer"),
        ("video_0", 0, True, "`end` must be an integer"),
    ],
)
def test_store_rejects_bad_reads(small_dataset, video_id, start, end, match):
    root, _, _, _ = small_dataset
    with pytest.raises(ValueError, match=match):
        RGNetFeatureStore(root).read_frames(video_id, start, end)


def test_loading_a_directory_without_manifest_fails(tmp_path):
    with pytest.raises(ValueError, match="not an RGNet dataset"):
        load_rgnet_dataset(tmp_path)


def _bad_video(writer, features, video_id="bad_video"):
    writer.add_video("good", random_features(0, 5, 4))
    writer.add_video(video_id, features)


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda w: _bad_video(w, np.full((5, 4), np.nan, np.float32)), "video 'bad_video' contain NaN"),
        (lambda w: _bad_video(w, np.zeros(5, np.float32)), "must be 2-D"),
        (lambda w: _bad_video(w, np.zeros((5, 3), np.float32)), "width 3"),
        (lambda w: _bad_video(w, np.zeros((0, 4), np.float32)), "at least one row"),
        (lambda w: _bad_video(w, np.zeros((5, 4), np.float32), video_id="good"), "already added"),
        (lambda w: w.add_query("train split", query_row("q", "v")), "`split`"),
        (lambda w: w.add_query("train", query_row("q", "v", timestamps=(3.0, 1.0))), "reversed"),
        (lambda w: w.add_query("train", query_row("q", "v", timestamps=(np.nan, 1.0))), "finite"),
        (lambda w: w.add_query("train", query_row("q", "v", duration=0.0)), "`duration`"),
        (lambda w: w.add_query("train", {**query_row("q", "v"), "query": "  "}), "`query`"),
        (lambda w: w.add_query("train", {**query_row("q", "v"), "colour": "red"}), "unknown column"),
        (lambda w: w.add_query("train", {"query_id": "q", "query": "x"}), "misses required column"),
        (lambda w: [w.add_query("train", query_row("q", "v")) for _ in range(2)], "appears twice"),
        (
            lambda w: [
                w.add_query("train", query_row("q", "v")),
                w.add_query("train", query_row("r", "v", text_features=np.ones((2, 3)))),
            ],
            "columns",
        ),
        (lambda w: w.add_query("train", query_row("q", "v", text_features=np.ones((2, 3)) * np.inf)), "NaN or inf"),
        (lambda w: [_bad_video(w, np.ones((2, 4))), w.add_query("train", query_row("q", "v")), w.finalize()], "'v'"),
        (lambda w: w.finalize(), "No video"),
    ],
)
def test_writer_rejects_bad_input(tmp_path, action, match):
    writer = RGNetDatasetWriter(tmp_path / "dataset")
    with pytest.raises(ValueError, match=match):
        action(writer)
    writer.abort()
    with pytest.raises(ValueError, match="not an RGNet dataset"):
        load_rgnet_dataset(tmp_path / "dataset")


def test_writer_refuses_to_overwrite_unless_asked(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no RGNet dataset"):
        RGNetDatasetWriter(tmp_path / "other", overwrite=True)
    with RGNetDatasetWriter(tmp_path / "dataset") as writer:
        writer.add_video("v", random_features(0, 3, 2))
        writer.add_query("train", query_row("q", "v"))
    (tmp_path / "dataset" / "conversion_summary.json").write_text("{}")  # as the converters write one
    with pytest.raises(ValueError, match="pass overwrite=True"):
        RGNetDatasetWriter(tmp_path / "dataset")
    with RGNetDatasetWriter(tmp_path / "dataset", overwrite=True) as writer:
        writer.add_video("w", random_features(1, 4, 2))
    queries, store = load_rgnet_dataset(tmp_path / "dataset")
    assert store.video_ids == ("w",) and len(queries) == 0  # the old query tables and summary are gone
    assert sorted(path.name for path in (tmp_path / "dataset").iterdir()) == [
        "features",
        "queries",
        "rgnet_dataset.json",
    ]
    # Files that are not the dataset's are never deleted with it: overwriting is refused, naming them.
    (tmp_path / "dataset" / "raw").mkdir()
    (tmp_path / "dataset" / "raw" / "annotations.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds an RGNet dataset and other files \['raw'\]; overwriting would"):
        RGNetDatasetWriter(tmp_path / "dataset", overwrite=True)
    assert (tmp_path / "dataset" / "raw" / "annotations.json").is_file()
    assert load_rgnet_dataset(tmp_path / "dataset")[1].video_ids == ("w",)
    # The remains of a failed write can be overwritten too.
    with pytest.raises(ValueError, match="contain NaN"):
        with RGNetDatasetWriter(tmp_path / "failed") as writer:
            writer.add_video("v", np.full((2, 2), np.nan))
    with RGNetDatasetWriter(tmp_path / "failed", overwrite=True) as writer:
        writer.add_video("v", random_features(2, 2, 2))
    assert not (tmp_path / "failed" / ".rgnet-incomplete").exists()


def test_files_a_writer_adds_beside_the_dataset_are_replaced_with_it(tmp_path):
    with RGNetDatasetWriter(tmp_path / "dataset") as writer:
        writer.add_video("v", random_features(0, 3, 2))
        writer.add_extra_file("events.json", "{}")
        for bad in ("", "sub/events.json", "rgnet_dataset.json", "features"):
            with pytest.raises(ValueError, match="`name` must be a plain file name"):
                writer.add_extra_file(bad, "{}")
    assert read_manifest(tmp_path / "dataset")["extra_files"] == ["events.json"]
    with pytest.raises(ValueError, match="contain NaN"):  # an aborted write with its extra file: still ours
        with RGNetDatasetWriter(tmp_path / "dataset", overwrite=True) as writer:
            writer.add_extra_file("ground_truth.json", "{}")
            writer.add_video("v", np.full((2, 2), np.nan))
    with RGNetDatasetWriter(tmp_path / "dataset", overwrite=True) as writer:
        writer.add_video("w", random_features(1, 4, 2))
    assert not (tmp_path / "dataset" / "ground_truth.json").exists()
    assert "extra_files" not in read_manifest(tmp_path / "dataset")


def test_writer_accepts_declared_extra_columns(tmp_path):
    from datasets import Features, Value

    with RGNetDatasetWriter(tmp_path / "dataset", extra_query_features=Features({"difficulty": Value("int32")})) as w:
        w.add_video("v", random_features(0, 4, 2))
        w.add_query("train", query_row("q", "v", difficulty=3))
    queries, _ = load_rgnet_dataset(tmp_path / "dataset")
    assert queries["train"][0]["difficulty"] == 3
    with pytest.raises(ValueError, match="redefines standard columns"):
        RGNetDatasetWriter(tmp_path / "other", extra_query_features=Features({"query": Value("string")}))


# ---------------------------------------------------------------------------------------------------------------
# Filters (spec §9.1)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "is_train", "timestamps", "query", "drop", "kept_span", "repairs"),
    [
        ("mad", True, (1.0, 3.0), "a", None, [1.0, 3.0], ()),
        ("mad", True, (5.0, 2.0), "a", None, [2.0, 5.0], ("swapped_timestamps",)),
        ("mad", True, (-0.5, 2.0), "a", "negative_start", None, ()),
        ("mad", True, (100.0, 101.0), "a", "start_after_video_end", None, ()),
        ("mad", True, (2.0, 2.0), "a", "zero_length", None, ()),
        ("mad", True, (90.0, 120.0), "a", None, [90.0, 100.0], ("clipped_end_to_duration",)),
        ("mad", True, None, "a", "missing_timestamps", None, ()),
        ("mad", True, (1.0, 2.0), " \t", "empty_query", None, ()),
        ("mad", False, (-0.5, 120.0), "a", None, [-0.5, 120.0], ("out_of_range_kept",)),
        ("mad", False, (2.0, 2.0), "a", None, [2.0, 2.0], ()),
        ("mad", False, None, "a", None, None, ()),
        ("ego4d", False, (2.01, 2.04), "a", "zero_length_at_0.1s", None, ()),
        ("ego4d", True, (50.04, 50.01), "a", "zero_length_at_0.1s", None, ()),
        ("ego4d", True, (99.99, 100.5), "a", "start_after_video_end", None, ()),
        ("ego4d", True, (10.0, 50.0), "a", "no_negative_window", None, ()),
        ("ego4d", False, (10.0, 50.0), "a", None, [10.0, 50.0], ()),
        ("ego4d", True, (10.0, 39.0), "a", None, [10.0, 39.0], ()),
        ("ego4d", True, (-1.0, 5.0), "a", None, [0.0, 5.0], ("clipped_start_to_zero",)),
        # The filters read a reversed pair as given (its first value is the start), then a kept pair is swapped.
        ("mad", True, (105.0, 2.0), "a", "start_after_video_end", None, ()),
        ("mad", True, (5.0, -1.0), "a", None, [0.0, 5.0], ("swapped_timestamps", "clipped_start_to_zero")),
        ("ego4d", True, (99.99, 30.0), "a", "start_after_video_end", None, ()),
        ("ego4d", True, (50.0, 10.0), "a", None, [10.0, 50.0], ("swapped_timestamps",)),
        ("mad", False, (5.0, -1.0), "a", None, [-1.0, 5.0], ("swapped_timestamps", "out_of_range_kept")),
        # A training moment wholly before the video's start is dropped, not clipped to nothing.
        ("ego4d", True, (-5.0, -1.0), "a", "before_video_start", None, ()),
        ("ego4d", True, (-3.0, 0.0), "a", "before_video_start", None, ()),
        # Text that the processor's query normalisation leaves empty.
        ("mad", True, (1.0, 2.0), ". ?", "empty_query", None, ()),
        ("ego4d", False, (1.0, 2.0), "?", "empty_query", None, ()),
    ],
)
def test_clean_query_row_applies_spec_filters(dataset, is_train, timestamps, query, drop, kept_span, repairs):
    # Ego4D numbers with duration 100: the start limit is 99.978 s; "no negative window" needs end > 40 s.
    row = {**query_row("q", "v", timestamps=timestamps, duration=100.0), "query": query}
    result = clean_query_row(row, dataset=dataset, is_train=is_train)
    assert result.drop_reason == drop
    assert result.repairs == repairs
    if drop is None:
        assert result.row["timestamps"] == kept_span
    else:
        assert result.row is None


def test_clean_query_row_rejects_malformed_rows():
    with pytest.raises(ValueError, match="`dataset`"):
        clean_query_row(query_row("q", "v"), dataset="tacos", is_train=True)
    with pytest.raises(ValueError, match="`timestamps` of query 'q' must be finite"):
        clean_query_row(query_row("q", "v", timestamps=(float("nan"), 1.0)), dataset="mad", is_train=True)
    with pytest.raises(ValueError, match="must be a pair"):
        clean_query_row({**query_row("q", "v"), "timestamps": [1.0]}, dataset="mad", is_train=True)
    with pytest.raises(ValueError, match="`duration` of query 'q'"):
        clean_query_row(query_row("q", "v", duration=float("inf")), dataset="mad", is_train=True)


# ---------------------------------------------------------------------------------------------------------------
# MAD release (annotation JSON + CLIP h5)
# ---------------------------------------------------------------------------------------------------------------


def _write_mad_release(directory, *, nan_movie=False):
    h5py = pytest.importorskip("h5py")
    movies = {"movie_a": random_features(1, 40, 8), "movie_b": random_features(2, 25, 8), "unused": np.ones((3, 8))}
    if nan_movie:
        movies["movie_b"][7, 3] = np.nan
    with h5py.File(directory / "CLIP_B32_frames_features_5fps.h5", "w") as handle:
        for movie, features in movies.items():
            handle.create_dataset(movie, data=features.astype(np.float32))
    tokens = {str(index): random_features(100 + index, 3 + index % 4, 8) for index in range(1, 12) if index != 9}
    with h5py.File(directory / "CLIP_B32_language_tokens_features.h5", "w") as handle:
        for query_id, features in tokens.items():
            handle.create_dataset(query_id, data=features)

    def entry(sentence, movie, start, end, duration=8.0):
        return {"sentence": sentence, "movie": movie, "movie_duration": duration, "timestamps": [start, end]}

    train = {
        "1": entry("He opens the door.", "movie_a", 1.0, 3.0),
        "2": entry("Reversed.", "movie_a", 5.0, 2.0),
        "3": entry("Negative start.", "movie_a", -1.0, 2.0),
        "4": entry("Starts at the end.", "movie_a", 8.0, 9.0),
        "5": entry("Zero length.", "movie_a", 2.0, 2.0),
        "6": entry("Runs past the end.", "movie_a", 6.0, 9.5),
        "7": entry("   ", "movie_a", 1.0, 2.0),
        "8": entry("Unknown movie.", "missing_movie", 1.0, 2.0),
        "9": entry("No token features.", "movie_b", 1.0, 2.0, duration=5.0),
    }
    val = {
        "10": entry("Past the end, kept.", "movie_b", 4.5, 6.0, duration=5.0),
        "11": entry("Before the start, kept.", "movie_a", -0.5, 1.0),
    }
    paths = {}
    for split, annotations in (("train", train), ("val", val)):
        paths[split] = directory / f"MAD_{split}.json"
        paths[split].write_text(json.dumps(annotations))
    return movies, tokens, paths


def test_prepare_mad_release_round_trip_and_filter_counts(tmp_path):
    movies, tokens, paths = _write_mad_release(tmp_path)
    (tmp_path / "test.json").write_text("{}")  # a split without rows is still summarised
    prepare_mad = load_script("prepare_mad")
    output = tmp_path / "mad"
    summary = prepare_mad.main(
        [
            "--annotations", f"train={paths['train']}",
            "--annotations", f"val={paths['val']}",
            "--annotations", f"test={tmp_path / 'test.json'}",
            "--video-features", str(tmp_path / "CLIP_B32_frames_features_5fps.h5"),
            "--text-features", str(tmp_path / "CLIP_B32_language_tokens_features.h5"),
            "--output", str(output),
            "--summary", str(tmp_path / "summary.json"),
            "--no-progress",
        ]
    )  # fmt: skip
    train = summary["splits"]["train"]
    assert (train["input"], train["kept"]) == (9, 3)
    assert train["dropped"] == {
        "empty_query": 1,
        "missing_text_features": 1,
        "missing_video_features": 1,
        "negative_start": 1,
        "start_after_video_end": 1,
        "zero_length": 1,
    }
    assert train["repaired"] == {"clipped_end_to_duration": 1, "swapped_timestamps": 1}
    assert summary["splits"]["val"]["repaired"] == {"out_of_range_kept": 2}
    assert (summary["splits"]["test"]["input"], summary["splits"]["test"]["kept"]) == (0, 0)
    assert summary["videos"] == {"available": 3, "written": 2, "unused": 1, "frames_written": 65}
    assert json.loads((output / "conversion_summary.json").read_text()) == summary
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    queries, store = load_rgnet_dataset(output)
    assert store.metadata["seconds_per_frame"] == 0.2 and store.metadata["dataset"] == "mad"
    for movie in ("movie_a", "movie_b"):
        assert store.read_video(movie).tobytes() == movies[movie].tobytes()
    assert "unused" not in store
    train_rows = {row["query_id"]: row for row in queries["train"].with_format("numpy")}
    assert sorted(train_rows) == ["1", "2", "6"]
    assert train_rows["1"]["query"] == "He opens the door." and train_rows["1"]["clip_id"] == "movie_a"
    np.testing.assert_array_equal(train_rows["2"]["timestamps"], [2.0, 5.0])
    np.testing.assert_array_equal(train_rows["6"]["timestamps"], [6.0, 8.0])
    np.testing.assert_array_equal(train_rows["6"]["text_features"], tokens["6"])
    val_rows = {row["query_id"]: row for row in queries["val"]}
    assert val_rows["10"]["timestamps"] == [4.5, 6.0] and val_rows["11"]["timestamps"] == [-0.5, 1.0]


def test_prepare_mad_strict_and_bad_features(tmp_path):
    _, _, paths = _write_mad_release(tmp_path, nan_movie=True)
    prepare_mad = load_script("prepare_mad")
    common = [
        "--annotations", f"train={paths['train']}",
        "--video-features", str(tmp_path / "CLIP_B32_frames_features_5fps.h5"),
        "--no-progress",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no features for video 'missing_movie'"):
        prepare_mad.main([*common, "--output", str(tmp_path / "strict"), "--strict"])
    with pytest.raises(ValueError, match="video 'movie_b' contain NaN"):
        prepare_mad.main([*common, "--output", str(tmp_path / "nan")])
    assert not (tmp_path / "nan" / "rgnet_dataset.json").exists()
    with pytest.raises(SystemExit):
        prepare_mad.main(["--annotations", "train", "--video-features", "x.h5", "--output", str(tmp_path / "o")])


def test_prepare_mad_explains_bad_annotations_and_unmatched_features(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    _, _, paths = _write_mad_release(tmp_path)
    prepare_mad = load_script("prepare_mad")
    video = ["--video-features", str(tmp_path / "CLIP_B32_frames_features_5fps.h5"), "--no-progress"]
    (tmp_path / "broken.json").write_text("{bad")
    with pytest.raises(ValueError, match="`--annotations` file .*broken.json' is not valid JSON"):
        prepare_mad.main(
            ["--annotations", f"train={tmp_path / 'broken.json'}", *video, "--output", str(tmp_path / "a")]
        )
    # A misspelt split name would give the training split the evaluation filters.
    with pytest.raises(SystemExit):
        prepare_mad.main(
            [
                "--annotations",
                f"train={paths['train']}",
                "--train-splits",
                "trian",
                *video,
                "--output",
                str(tmp_path / "c"),
            ]
        )
    assert "--train-splits names split(s) ['trian'] that --annotations does not give (['train'])" in (
        capsys.readouterr().err
    )
    with h5py.File(tmp_path / "other.h5", "w") as handle:  # features of other movies only
        handle.create_dataset("another_movie", data=np.ones((4, 8), dtype=np.float32))
        handle.create_group("a_group")
    other = ["--video-features", str(tmp_path / "other.h5"), "--no-progress", "--output", str(tmp_path / "b")]
    with pytest.raises(ValueError, match=r"No query row is left .*'missing_video_features': 5, .*None of the annot"):
        prepare_mad.main(["--annotations", f"train={paths['train']}", *other])
    assert not (tmp_path / "b").exists()
    load = prepare_mad._read_h5_array
    with h5py.File(tmp_path / "other.h5", "r") as handle, pytest.raises(ValueError, match="'a_group' is a Group"):
        load(handle, "a_group", "video_features")


def test_original_layout_reader_names_a_file_that_is_not_lmdb(tmp_path):
    pytest.importorskip("lmdb")
    (tmp_path / "features.h5").write_bytes(b"not an lmdb environment" * 100)
    with pytest.raises(ValueError, match="features.h5' is not an LMDB environment"):
        LmdbNpzReader(tmp_path / "features.h5")


@pytest.mark.parametrize("flag", ["--video-features", "--text-features"])
def test_prepare_mad_names_a_missing_input_file(tmp_path, capsys, flag):
    _, _, paths = _write_mad_release(tmp_path)
    features = {"--video-features": str(tmp_path / "CLIP_B32_frames_features_5fps.h5")}
    features[flag] = str(tmp_path / "nope.h5")
    arguments = ["--annotations", f"train={paths['train']}", "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        load_script("prepare_mad").main([*arguments, *(part for item in features.items() for part in item)])
    assert exit_info.value.code == 2
    assert f"{flag} '{tmp_path / 'nope.h5'}' does not exist." in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_converter_scripts_report_bad_input_in_one_line(tmp_path):
    """On the command line a data error is one `error:` line naming the problem, not a traceback."""
    _, _, paths = _write_mad_release(tmp_path)
    (tmp_path / "not.h5").write_text("{}")  # not an HDF5 file
    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_mad.py"
    arguments = ["--annotations", f"train={paths['train']}", "--video-features", str(tmp_path / "not.h5")]
    result = subprocess.run(
        [sys.executable, str(script), *arguments, "--output", str(tmp_path / "o"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert (
        f"prepare_mad.py: error: `video_features` '{tmp_path / 'not.h5'}' is not a readable HDF5 file" in result.stderr
    )


def test_converter_flags_and_output_folder_are_checked_before_the_annotations_are_read(tmp_path, capsys):
    """`--max-shard-gb inf` once failed with an OverflowError traceback and `nan` naming no flag; a `--summary` that
    is a folder, or an `--output` holding other files, failed only after the conversion."""
    _, _, paths = _write_mad_release(tmp_path)
    prepare_mad = load_script("prepare_mad")
    arguments = ["--annotations", f"train={paths['train']}", "--no-progress"]
    arguments += ["--video-features", str(tmp_path / "CLIP_B32_frames_features_5fps.h5")]
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "mine.txt").write_text("x")
    (tmp_path / "summary_dir").mkdir()
    cases = [
        (["--max-shard-gb", "inf", "--output", str(tmp_path / "o")], "`--max-shard-gb` must be a positive number"),
        (["--max-shard-gb", "nan", "--output", str(tmp_path / "o")], "`--max-shard-gb` must be a positive number"),
        (["--output", str(tmp_path / "occupied")], "is not empty; pass overwrite=True (`--overwrite`"),
        (["--output", str(tmp_path / "o"), "--summary", str(tmp_path / "summary_dir")], "`--summary` '"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            prepare_mad.main([*arguments, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_annotations_with_a_repeated_key_or_a_query_that_is_not_text_fail_before_writing(tmp_path):
    """`json` keeps the last of two entries under one MAD query id, silently; a query that is not text passed the
    filters and failed in the writer, after every video's features were written."""
    _, _, paths = _write_mad_release(tmp_path)
    prepare_mad = load_script("prepare_mad")
    video = ["--video-features", str(tmp_path / "CLIP_B32_frames_features_5fps.h5"), "--no-progress"]
    text = paths["train"].read_text()
    repeated = tmp_path / "repeated.json"
    repeated.write_text(
        text[:-1]
        + ', "1": '
        + json.dumps({"sentence": "Again.", "movie": "movie_a", "movie_duration": 8.0, "timestamps": [1, 2]})
        + "}"
    )
    with pytest.raises(ValueError, match=r"`--annotations` file .*repeated.json' repeats the key '1' in one object"):
        prepare_mad.main(["--annotations", f"train={repeated}", *video, "--output", str(tmp_path / "a")])
    annotations = json.loads(text)
    annotations["1"]["sentence"] = 123
    (tmp_path / "number.json").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="`query` of query '1' must be a string, got 123"):
        prepare_mad.main(
            ["--annotations", f"train={tmp_path / 'number.json'}", *video, "--output", str(tmp_path / "b")]
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_writer_that_fails_to_finalize_cleans_up_as_after_any_failure(tmp_path):
    with pytest.raises(ValueError, match="without features"):
        with RGNetDatasetWriter(tmp_path / "out") as writer:
            writer.add_video("a", random_features(0, 5, 4))
            writer.add_query("train", query_row("q1", "missing"))
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [".rgnet-incomplete", "features"]
    assert writer._shard_file is None  # closed


# ---------------------------------------------------------------------------------------------------------------
# Ego4D-NLQ v1 / v2 / NaQ (annotation JSON + per-clip EgoVLP .pt)
# ---------------------------------------------------------------------------------------------------------------


def _language_query(start, end, text="where did I put the keys", **extra):
    entry = {"clip_start_sec": start, "clip_end_sec": end, "template": "Objects: Where is object X?", **extra}
    if text is not None:
        entry["query"] = text
    return entry


def _nlq_json(version, clips, video_uid="video_1"):
    return {"version": version, "date": "220101", "videos": [{"video_uid": video_uid, "clips": clips}]}


def _clip(clip_uid, start, end, annotations, **extra):
    return {"clip_uid": clip_uid, "video_start_sec": start, "video_end_sec": end, "annotations": annotations, **extra}


def test_prepare_ego4d_v1_v2_naq_round_trip_and_filter_counts(tmp_path):
    torch = pytest.importorskip("torch")
    features_dir = tmp_path / "egovlp"
    features_dir.mkdir()
    clip_features = {"clip_a": random_features(3, 90, 4), "clip_n": random_features(4, 60, 4)}
    for clip_uid, features in clip_features.items():
        torch.save(torch.from_numpy(features.copy()), features_dir / f"{clip_uid}.pt")
    # v1 train: clip_a spans rounded [10, 491] -> duration 481 s.
    v1_train = _nlq_json(
        "v1",
        [
            _clip(
                "clip_a",
                10.4,
                490.6,
                [
                    {
                        "annotation_uid": "ann1",
                        "language_queries": [
                            _language_query(150.0, 160.0),
                            _language_query(5.0, 6.0, text=None),  # v1 entries may lack the text
                            _language_query(200.04, 200.01),  # reversed, then zero after rounding to 0.1 s
                            _language_query(10.0, 450.0),  # no negative window
                            _language_query(480.95, 481.0),  # starts after 481 * 479.895 / 480
                            _language_query(300.0, 290.0),  # reversed, kept
                        ],
                    }
                ],
                video_start_frame=312,
                source_clip_uid="src",
            ),
            _clip(
                "clip_missing",
                0.0,
                480.0,
                [{"annotation_uid": "ann2", "language_queries": [_language_query(150, 170)]}],
            ),
        ],
    )
    v2_val = _nlq_json(
        "v2",
        [
            _clip(
                "clip_a",
                10.4,
                490.6,
                [
                    {
                        "annotation_uid": "ann3",
                        "language_queries": [
                            _language_query(10.0, 450.0, slot_x="keys"),  # kept outside training
                            _language_query(3.01, 3.04),  # zero after rounding: dropped in every split
                            _language_query(1.0, 2.0, text="   "),
                        ],
                    }
                ],
            )
        ],
    )
    test_unannotated = {
        "version": "v2",
        "videos": [
            {
                "video_uid": "video_1",
                "clips": [
                    _clip("clip_a", 10.4, 490.6, [{"annotation_uid": "ann4", "language_queries": [{"query": "q?"}]}])
                ],
            }
        ],
    }
    naq_train = _nlq_json(
        "v1",
        [_clip("clip_n", 0.0, 112.2, [{"annotation_uid": "naq1", "language_queries": [_language_query(12.5, 20.0)]}])],
        video_uid="video_2",
    )
    files = {"train": v1_train, "val": v2_val, "test": test_unannotated, "naq_train": naq_train}
    arguments = []
    for split, content in files.items():
        (tmp_path / f"{split}.json").write_text(json.dumps(content))
        arguments += ["--annotations", f"{split}={tmp_path / f'{split}.json'}"]
    output = tmp_path / "ego4d"
    summary = load_script("prepare_ego4d_nlq").main(
        [*arguments, "--features-dir", str(features_dir), "--output", str(output), "--no-progress"]
    )

    splits = summary["splits"]
    assert (splits["train"]["input"], splits["train"]["kept"]) == (7, 2)
    assert splits["train"]["dropped"] == {
        "empty_query": 1,
        "missing_video_features": 1,
        "no_negative_window": 1,
        "start_after_video_end": 1,
        "zero_length_at_0.1s": 1,
    }
    assert splits["train"]["repaired"] == {"swapped_timestamps": 1}
    assert splits["train"]["drop_examples"]["no_negative_window"] == ["ann1_3"]
    assert splits["val"]["dropped"] == {"empty_query": 1, "zero_length_at_0.1s": 1}
    assert (splits["test"]["kept"], splits["naq_train"]["kept"]) == (1, 1)

    queries, store = load_rgnet_dataset(output)
    assert store.metadata["seconds_per_frame"] == 0.535
    assert store.metadata["annotation_versions"] == {"train": "v1", "val": "v2", "test": "v2", "naq_train": "v1"}
    for clip_uid, features in clip_features.items():
        assert store.read_video(clip_uid).tobytes() == features.tobytes()
    train = {row["query_id"]: row for row in queries["train"]}
    assert sorted(train) == ["ann1_0", "ann1_5"]
    assert train["ann1_0"] == {
        "query_id": "ann1_0",
        "query": "where did I put the keys",
        "video_id": "clip_a",
        "duration": 481.0,
        "timestamps": [150.0, 160.0],
        "split": "train",
        "clip_id": "clip_a",
        "video_uid": "video_1",
        "clip_video_start_end": [10.0, 491.0],
    }
    assert train["ann1_5"]["timestamps"] == [290.0, 300.0]
    assert queries["val"]["query_id"] == ["ann3_0"]
    assert queries["test"][0]["timestamps"] is None and queries["test"][0]["query_id"] == "ann4_0"
    naq = queries["naq_train"][0]
    assert (naq["query_id"], naq["duration"], naq["clip_video_start_end"]) == ("naq1_0", 112.0, [0.0, 112.0])


def test_prepare_ego4d_rejects_bad_feature_files(tmp_path):
    torch = pytest.importorskip("torch")
    prepare = load_script("prepare_ego4d_nlq")
    features_dir = tmp_path / "egovlp"
    features_dir.mkdir()
    annotations = tmp_path / "train.json"
    clip = _clip("clip_a", 0.0, 480.0, [{"annotation_uid": "a", "language_queries": [_language_query(150, 170)]}])
    annotations.write_text(json.dumps(_nlq_json("v2", [clip])))
    arguments = ["--annotations", f"train={annotations}", "--features-dir", str(features_dir), "--no-progress"]

    with pytest.raises(ValueError, match="`features_dir` .* holds no `{clip_uid}.pt` feature file"):
        prepare.main([*arguments, "--output", str(tmp_path / "empty")])
    assert not (tmp_path / "empty").exists()
    torch.save({"features": torch.zeros(3, 4)}, features_dir / "clip_a.pt")
    with pytest.raises(ValueError, match="clip_a.pt"):
        prepare.main([*arguments, "--output", str(tmp_path / "dict")])
    torch.save(torch.full((3, 4), float("nan")), features_dir / "clip_a.pt")
    with pytest.raises(ValueError, match="video 'clip_a' contain NaN"):
        prepare.main([*arguments, "--output", str(tmp_path / "nan")])
    annotations.write_text(json.dumps(_nlq_json("v2", [_clip("clip_a", 5.0, 5.2, [])])))
    with pytest.raises(ValueError, match="clip 'clip_a'"):
        prepare.main([*arguments, "--output", str(tmp_path / "short")])
    for bad in (None, float("nan"), float("inf"), "12"):
        annotations.write_text(json.dumps(_nlq_json("v2", [_clip("clip_a", 0.0, bad, [])])))
        with pytest.raises(ValueError, match="clip 'clip_a': `video_end_sec` must be a finite number of seconds"):
            prepare.main([*arguments, "--output", str(tmp_path / "bounds")])


# ---------------------------------------------------------------------------------------------------------------
# Original implementation's layout (JSON Lines + LMDB of compressed .npz)
# ---------------------------------------------------------------------------------------------------------------


def _write_lmdb(path, entries):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=16 * 1024**2)
    with env.begin(write=True) as transaction:
        for key, arrays in entries.items():
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            transaction.put(key.encode("utf-8"), buffer.getvalue())
    env.close()


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_original_layout_mad_round_trip(tmp_path):
    movies = {"movie_a": random_features(5, 30, 8), "movie_b": random_features(6, 12, 8)}
    _write_lmdb(tmp_path / "video_lmdb", {movie: {"features": features} for movie, features in movies.items()})
    text = {
        "q1": {"token_features": random_features(7, 4, 8), "cls_features": random_features(8, 1, 8)[0]},
        "q2": {"token_features": random_features(9, 2, 8), "eot_features": random_features(10, 3, 8)},
    }
    _write_lmdb(tmp_path / "text_lmdb", text)

    def row(query_id, movie, start, end):
        return {
            "query_id": query_id,
            "query": "A door.",
            "video_id": movie,
            "clip_id": movie,
            "duration": 6.0,
            "timestamps": [start, end],
        }

    _write_jsonl(
        tmp_path / "train.jsonl",
        [
            row("q1", "movie_a", 1.0, 2.0),
            row("q2", "movie_b", 3.0, 1.0),
            row("q3", "movie_a", 1.0, 2.0),
            row("q4", "movie_a", -1.0, 2.0),
        ],
    )
    summary = load_script("prepare_mad").main(
        [
            "--original-layout",
            "--annotations", f"train={tmp_path / 'train.jsonl'}",
            "--video-lmdb", str(tmp_path / "video_lmdb"),
            "--text-lmdb", str(tmp_path / "text_lmdb"),
            "--output", str(tmp_path / "out"),
            "--no-progress",
        ]
    )  # fmt: skip
    assert summary["splits"]["train"]["dropped"] == {"missing_text_features": 1, "negative_start": 1}
    assert summary["splits"]["train"]["repaired"] == {"swapped_timestamps": 1}
    queries, store = load_rgnet_dataset(tmp_path / "out")
    assert store.metadata["source"] == "original-layout" and store.metadata["seconds_per_frame"] == 0.2
    for movie, features in movies.items():
        assert store.read_video(movie).tobytes() == features.tobytes()
    rows = {row["query_id"]: row for row in queries["train"].with_format("numpy")}
    np.testing.assert_array_equal(rows["q1"]["text_features"], text["q1"]["token_features"])
    np.testing.assert_array_equal(rows["q1"]["sentence_embedding"], text["q1"]["cls_features"])
    np.testing.assert_array_equal(rows["q2"]["sentence_embedding"], text["q2"]["eot_features"][0])
    np.testing.assert_array_equal(rows["q2"]["timestamps"], [1.0, 3.0])


def test_original_layout_ego4d_round_trip_and_bad_values(tmp_path):
    clips = {"clip_a": random_features(11, 20, 4)}
    _write_lmdb(tmp_path / "video_lmdb", {clip: {"features": features} for clip, features in clips.items()})
    rows = [
        {
            "query_id": "ann_0",
            "query": "what did I cut?",
            "video_id": "video_1",
            "clip_id": "clip_a",
            "duration": 480.0,
            "timestamps": [200.0, 210.0],
            "clip_video_start_end": [10.0, 490.0],
        },
        {
            "query_id": "ann_1",
            "query": "where is the cup?",
            "video_id": "video_1",
            "clip_id": "clip_a",
            "duration": 480.0,  # no `clip_video_start_end`: once a column mismatch after the features were written
        },
    ]
    _write_jsonl(tmp_path / "val.jsonl", rows)
    prepare = load_script("prepare_ego4d_nlq")
    arguments = ["--original-layout", "--annotations", f"val={tmp_path / 'val.jsonl'}", "--no-progress"]
    prepare.main([*arguments, "--video-lmdb", str(tmp_path / "video_lmdb"), "--output", str(tmp_path / "out")])
    queries, store = load_rgnet_dataset(tmp_path / "out")
    assert store.read_video("clip_a").tobytes() == clips["clip_a"].tobytes()
    first, second = queries["val"]
    assert (first["video_id"], first["video_uid"], first["clip_id"]) == ("clip_a", "video_1", "clip_a")
    assert first["clip_video_start_end"] == [10.0, 490.0] and second["timestamps"] is None
    assert second["clip_video_start_end"] is None

    _write_lmdb(tmp_path / "broken_lmdb", {})
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "broken_lmdb"), map_size=16 * 1024**2)
    with env.begin(write=True) as transaction:
        transaction.put(b"clip_a", b"not an npz archive")
    env.close()
    with pytest.raises(ValueError, match="'clip_a'.*not a readable .npz"):
        prepare.main([*arguments, "--video-lmdb", str(tmp_path / "broken_lmdb"), "--output", str(tmp_path / "x")])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda clip: clip["annotations"][0].update(language_queries="where is it"),
            "`language_queries` must be a list",
        ),
        (
            lambda clip: clip["annotations"][0].update(language_queries=["where is it"]),
            "language query 0 must be an object",
        ),
        (
            lambda clip: clip["annotations"][0]["language_queries"][0].update(clip_start_sec="1.0"),
            "`clip_start_sec` must be a finite number",
        ),
        (lambda clip: clip.update(clip_uid=None), "`clip_uid` must be a non-empty string, got None"),
    ],
)
def test_ego4d_annotations_name_a_malformed_entry(tmp_path, mutate, message):
    """Each was an AttributeError traceback, a string parsed as seconds, or a clip named "None"."""
    clip = _clip("clip_a", 0.0, 480.0, [{"annotation_uid": "ann", "language_queries": [_language_query(1.0, 5.0)]}])
    mutate(clip)
    (tmp_path / "nlq.json").write_text(json.dumps(_nlq_json("v2", [clip])))
    with pytest.raises(ValueError, match=message):
        load_script("prepare_ego4d_nlq").ego4d_annotation_rows(tmp_path / "nlq.json")


# ---------------------------------------------------------------------------------------------------------------
# Benchmark script
# ---------------------------------------------------------------------------------------------------------------


def test_benchmark_script_writes_report(tmp_path):
    output = tmp_path / "report.json"
    report = load_script("benchmark_data").main(
        ["--num-videos", "2", "--frames", "40", "--dim", "4", "--window", "9", "--reads", "5", "--warmup", "1",
         "--work-dir", str(tmp_path), "--output", str(output)]
    )  # fmt: skip
    assert json.loads(output.read_text()) == report
    assert set(report["results"]) == {"warm", "cold"}
    assert report["results"]["warm"]["reads"] == 5 and report["target_ms"] == 5.0
    assert {"numpy", "datasets", "cpu", "hostname"} <= set(report["environment"])
