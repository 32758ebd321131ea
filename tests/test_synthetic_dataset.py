"""Tests of the embedded synthetic long-video grounding dataset (`scripts/make_synthetic_dataset.py`).

A reduced build (8 short videos) is generated once per session; the claims checked are those the quickstart and
the evaluation rely on: determinism, the project's layout and columns, events where the timestamps say,
distractors in other windows, unique targets, and compatibility with the training reader.
"""

import io
import json
from collections import Counter

import numpy as np
import pytest

from configuration_rgnet import RGNetConfig
from data_rgnet import MANIFEST_FILENAME, load_rgnet_dataset, read_manifest
from processing_rgnet import (
    enumerate_windows,
    moment_to_frames,
    positive_window_range,
    read_training_example,
)
from scripts import make_synthetic_dataset as synthetic

# Small but structurally complete: several targets with distractors per video, videos lengthened to fit them.
SMALL = {
    "num_train_videos": 4,
    "num_validation_videos": 2,
    "num_test_videos": 2,
    "min_video_frames": 600,
    "max_video_frames": 900,
    "min_targets_per_video": 2,
    "max_targets_per_video": 3,
}


def build(path, seed=0, **overrides):
    return synthetic.make_synthetic_dataset(path, seed=seed, progress=False, **{**SMALL, **overrides})


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    return build(tmp_path_factory.mktemp("synthetic") / "data", seed=7)


@pytest.fixture(scope="session")
def dataset(dataset_dir):
    queries, store = load_rgnet_dataset(dataset_dir)
    return {
        "queries": queries,
        "store": store,
        "events": synthetic.read_synthetic_events(dataset_dir),
        "vocabulary": synthetic.load_synthetic_vocabulary(dataset_dir),
        "settings": synthetic.SyntheticDatasetSettings(**store.metadata["generator"]),
    }


def all_rows(queries):
    return [row for split in queries for row in queries[split].with_format("numpy")]


def table_contents(path):
    """Every split's columns as numpy values (object arrays for ragged columns)."""
    queries, _ = load_rgnet_dataset(path)
    contents = {}
    for split in queries:
        rows = list(queries[split].with_format("numpy"))
        contents[split] = {column: [row[column] for row in rows] for column in queries[split].column_names}
    return contents


# ---------------------------------------------------------------------------------------------------------------
# Determinism and splits
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_features_and_rows(tmp_path, dataset_dir):
    again = build(tmp_path / "again", seed=7)
    for name in ("features/shard-00000.npy", "features/index.json", synthetic.EVENTS_FILENAME):
        assert (again / name).read_bytes() == (dataset_dir / name).read_bytes(), name
    assert read_manifest(again) == read_manifest(dataset_dir)
    first, second = table_contents(dataset_dir), table_contents(again)
    assert first.keys() == second.keys()
    for split in first:
        assert first[split].keys() == second[split].keys()
        for column, values in first[split].items():
            for left, right in zip(values, second[split][column], strict=True):
                np.testing.assert_array_equal(left, right, err_msg=f"{split}/{column}")

    other = build(tmp_path / "other", seed=8)
    assert (other / "features/shard-00000.npy").read_bytes() != (dataset_dir / "features/shard-00000.npy").read_bytes()


def test_a_video_does_not_depend_on_the_size_of_other_splits():
    small = synthetic.SyntheticDatasetSettings(**SMALL)
    larger = synthetic.SyntheticDatasetSettings(**{**SMALL, "num_train_videos": 9, "num_validation_videos": 0})
    first = synthetic.generate_video(small, synthetic.build_vocabulary(small), "test", 1)
    second = synthetic.generate_video(larger, synthetic.build_vocabulary(larger), "test", 1)
    assert first.features.tobytes() == second.features.tobytes()
    assert first.events == second.events and first.queries[0]["query"] == second.queries[0]["query"]


def test_splits_hold_disjoint_videos(dataset):
    queries, store, events = dataset["queries"], dataset["store"], dataset["events"]
    assert list(queries) == ["train", "validation", "test"]
    videos = {split: set(queries[split]["video_id"]) for split in queries}
    assert [len(videos[split]) for split in queries] == [4, 2, 2]
    assert not (videos["train"] & videos["validation"] or videos["train"] & videos["test"])
    assert not videos["validation"] & videos["test"]
    assert set().union(*videos.values()) == set(store.video_ids) == set(events)
    for split, ids in videos.items():
        assert all(events[video_id]["split"] == split for video_id in ids)
        assert all(video_id.startswith(f"synthetic-{split}-") for video_id in ids)


# ---------------------------------------------------------------------------------------------------------------
# Layout: the columns and types of the MAD converter
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


def test_query_columns_and_types_equal_the_mad_converter(tmp_path, dataset_dir, dataset):
    """A MAD conversion with token features and sentence embeddings (original layout) has the same schema."""
    from data_rgnet import convert_original_layout

    rng = np.random.default_rng(0)
    dim = dataset["store"].feature_dim
    _write_lmdb(tmp_path / "video", {"movie": {"features": rng.standard_normal((40, dim)).astype(np.float32)}})
    _write_lmdb(
        tmp_path / "text",
        {
            "q0": {
                "token_features": rng.standard_normal((3, dataset["settings"].text_feature_dim)).astype(np.float32),
                "cls_features": rng.standard_normal(dim).astype(np.float32),
            }
        },
    )
    row = {"query_id": "q0", "query": "A door.", "video_id": "movie", "clip_id": "movie", "duration": 8.0}
    (tmp_path / "test.jsonl").write_text(json.dumps({**row, "timestamps": [1.0, 2.0]}) + "\n")
    convert_original_layout(
        {"test": tmp_path / "test.jsonl"},
        tmp_path / "video",
        tmp_path / "mad",
        dataset="mad",
        text_lmdb=tmp_path / "text",
        progress=False,
    )
    mad_queries, _ = load_rgnet_dataset(tmp_path / "mad")
    mad_manifest, manifest = read_manifest(tmp_path / "mad"), read_manifest(dataset_dir)
    for split, queries in dataset["queries"].items():
        assert queries.column_names == mad_queries["test"].column_names
        assert queries.features == mad_queries["test"].features
        assert manifest["splits"][split]["columns"] == mad_manifest["splits"]["test"]["columns"]
    assert manifest["feature_dim"] == mad_manifest["feature_dim"] and manifest["feature_dtype"] == "float32"


def test_metadata_gives_a_working_config(dataset):
    metadata, settings = dataset["store"].metadata, dataset["settings"]
    config = RGNetConfig(**metadata["recommended_config"], hidden_size=32, num_attention_heads=4)
    assert config.video_feature_dim == dataset["store"].feature_dim == config.pooled_text_dim
    assert config.seconds_per_frame == metadata["seconds_per_frame"] == settings.seconds_per_frame
    assert (config.max_window_frames, config.window_stride) == (settings.max_window_frames, settings.window_stride)
    assert metadata["dataset"] == "synthetic" and metadata["events_file"] == synthetic.EVENTS_FILENAME
    assert settings.to_dict() == {**synthetic.SyntheticDatasetSettings().to_dict(), **SMALL, "seed": 7}


# ---------------------------------------------------------------------------------------------------------------
# Content: events, distractors, queries
# ---------------------------------------------------------------------------------------------------------------


def test_event_signal_is_where_the_timestamps_say(dataset):
    store, events, settings = dataset["store"], dataset["events"], dataset["settings"]
    rows = all_rows(dataset["queries"])
    assert len(rows) == sum(event.role == "target" for entry in events.values() for event in entry["events"])
    for row in rows:
        video = events[row["video_id"]]
        (target,) = [
            event for event in video["events"] if event.role == "target" and event.query_id == row["query_id"]
        ]
        delta = settings.seconds_per_frame
        np.testing.assert_allclose(row["timestamps"], [target.start_frame * delta, target.end_frame * delta])
        assert row["duration"] == video["num_frames"] * delta == store.num_frames(row["video_id"]) * delta

        frames = store.read_video(row["video_id"]).astype(np.float64)
        query = np.asarray(row["sentence_embedding"], dtype=np.float64)
        cosine = frames @ query / np.linalg.norm(frames, axis=1) / np.linalg.norm(query)
        core = cosine[target.start_frame + settings.onset_frames : target.end_frame - settings.onset_frames]
        in_any_event = np.zeros(len(frames), dtype=bool)
        for event in video["events"]:
            in_any_event[event.start_frame : event.end_frame] = True
        background = cosine[~in_any_event]
        # Over the whole default build: core means >= 0.52, |background means| <= 0.15, 99th percentile of the
        # background at least 0.2 below the core mean (the drift makes the background wander).
        assert core.mean() > 0.4, row["query_id"]
        assert abs(background.mean()) < 0.25 and np.quantile(background, 0.99) < core.mean() - 0.1


def test_each_event_adds_exactly_its_three_signatures_in_its_frames(dataset):
    """Regenerating a video with another `signature_scale` changes no random draw, so the difference of the two
    isolates the planted signal: zero outside the events; inside, the sum of the event's three signatures with a
    soft onset."""
    store, vocabulary, settings = dataset["store"], dataset["vocabulary"], dataset["settings"]
    weaker = synthetic.SyntheticDatasetSettings(
        **{**settings.to_dict(), "signature_scale": settings.signature_scale / 2}
    )
    for video_id, entry in dataset["events"].items():
        index = int(video_id.rsplit("-", 1)[1])
        stored = store.read_video(video_id).astype(np.float64)
        signal = stored - synthetic.generate_video(weaker, vocabulary, entry["split"], index).features
        planted = np.zeros(len(stored), dtype=bool)
        for event in entry["events"]:
            planted[event.start_frame : event.end_frame] = True
            frames = signal[event.start_frame : event.end_frame]
            direction = vocabulary.event_signature(event.words)
            cosine = frames @ direction / np.linalg.norm(frames, axis=1) / np.linalg.norm(direction)
            assert cosine.min() > 0.9999, (video_id, event)
            amplitude = np.linalg.norm(frames, axis=1)
            assert amplitude[0] < amplitude.max() / 2 and amplitude[-1] < amplitude.max() / 2  # soft onset and end
        assert np.abs(signal[~planted]).max() < 1e-5


def test_distractors_share_part_of_the_description_and_lie_in_other_windows(dataset):
    settings, events = dataset["settings"], dataset["events"]
    shared_counts = Counter()
    for row in all_rows(dataset["queries"]):
        video = events[row["video_id"]]
        target = next(
            event for event in video["events"] if event.role == "target" and event.query_id == row["query_id"]
        )
        distractors = [event for event in video["events"] if event.role == "distractor" and event.query_id == row["query_id"]]  # fmt: skip
        assert len(distractors) == settings.distractors_per_target
        num_frames = video["num_frames"]
        moment = moment_to_frames(row["timestamps"], settings.seconds_per_frame, num_frames).frames
        first, last = positive_window_range(moment, num_frames, settings.max_window_frames, settings.window_stride)
        offsets, lengths = enumerate_windows(num_frames, settings.max_window_frames, settings.window_stride)
        for distractor in distractors:
            shared = sum(left == right for left, right in zip(distractor.words, target.words, strict=True))
            assert shared in (1, 2)
            shared_counts[shared] += 1
            for window in range(int(first), int(last) + 1):
                window_end = offsets[window] + lengths[window]
                assert distractor.end_frame <= offsets[window] or distractor.start_frame >= window_end
        # The first three distractors change different slots: together they keep each pair of words once.
        changed = [{slot for slot in range(3) if d.words[slot] != target.words[slot]} for d in distractors[:3]]
        assert set.union(*changed) == {0, 1, 2}
    assert shared_counts[2] > shared_counts[1] > 0


def test_no_window_overlaps_two_events(dataset):
    settings = dataset["settings"]
    for entry in dataset["events"].values():
        offsets, lengths = enumerate_windows(entry["num_frames"], settings.max_window_frames, settings.window_stride)
        starts = np.array([event.start_frame for event in entry["events"]])
        ends = np.array([event.end_frame for event in entry["events"]])
        assert (starts[1:] - ends[:-1] >= settings.min_event_gap_frames).all()
        overlaps = (starts[None, :] < (offsets + lengths)[:, None]) & (ends[None, :] > offsets[:, None])
        assert overlaps.sum(axis=1).max() <= 1


def test_each_target_triple_is_unique_within_its_video(dataset):
    for entry in dataset["events"].values():
        counts = Counter(event.words for event in entry["events"])
        assert all(counts[event.words] == 1 for event in entry["events"] if event.role == "target")
        assert max(counts.values()) == 1


def test_query_text_and_token_features_describe_the_target(dataset):
    vocabulary, settings, events = dataset["vocabulary"], dataset["settings"], dataset["events"]
    for row in all_rows(dataset["queries"]):
        target = next(
            event for event in events[row["video_id"]]["events"] if event.query_id == row["query_id"]
            and event.role == "target"
        )  # fmt: skip
        tokens = synthetic.query_tokens(row["query"])
        assert row["query"][0].isupper() and row["query"].endswith(".")
        assert [token for token in tokens if token in vocabulary.signatures] == [
            word for word in tokens if word in target.words
        ]
        assert set(target.words) <= set(tokens)
        assert set(tokens) - set(target.words) <= set(vocabulary.function_words)
        features = np.asarray(row["text_features"])
        assert features.shape == (len(tokens), settings.text_feature_dim) and features.dtype == np.float32
        # Token features = word vectors + small noise.
        clean = synthetic.encode_query(row["query"], vocabulary)
        assert np.linalg.norm(features - clean, axis=1).max() < 3 * settings.text_noise
        signature = vocabulary.event_signature(target.words)
        embedding = np.asarray(row["sentence_embedding"], dtype=np.float64)
        assert embedding.shape == (settings.video_feature_dim,)
        assert embedding @ signature / np.linalg.norm(signature) / np.linalg.norm(embedding) > 0.99
    with pytest.raises(ValueError, match="not in the synthetic vocabulary"):
        synthetic.encode_query("The red submarine jumps.", vocabulary)


# ---------------------------------------------------------------------------------------------------------------
# Reading it the way training does
# ---------------------------------------------------------------------------------------------------------------


def test_training_windows_read_with_the_training_reader(dataset):
    queries, store, settings = dataset["queries"], dataset["store"], dataset["settings"]
    rng = np.random.default_rng(0)
    for row in queries["train"].with_format("numpy"):
        example = read_training_example(
            row,
            store,
            rng,
            max_window_frames=settings.max_window_frames,
            window_stride=settings.window_stride,
            seconds_per_frame=settings.seconds_per_frame,
        )
        length = example["video_features"].shape[0]
        assert 1 <= length <= settings.max_window_frames
        assert example["video_features"].shape[1] == settings.video_feature_dim
        assert example["negative_video_features"] is not None
        assert example["text_features"].shape[1] == settings.text_feature_dim
        center, width = example["span"]
        assert 0 < width <= 1 and 0 <= center - width / 2 and center + width / 2 <= 1 + 1e-6
        expected = store.read_frames(row["video_id"], example["window_offset"], example["window_offset"] + length)
        np.testing.assert_array_equal(example["video_features"], expected)


# ---------------------------------------------------------------------------------------------------------------
# Command line, reuse and settings
# ---------------------------------------------------------------------------------------------------------------


def test_cli_builds_reuses_and_overwrites(tmp_path, monkeypatch):
    output = tmp_path / "cli"
    small = [f"--set={name}={value}" for name, value in SMALL.items() if not name.startswith("num_")]
    arguments = ["--output", str(output), "--no-progress", "--num-train-videos", "2", "--num-validation-videos", "1"]
    arguments += ["--num-test-videos", "1", *small]
    assert synthetic.main([*arguments, "--reuse"]) == output
    manifest_time = (output / MANIFEST_FILENAME).stat().st_mtime_ns
    assert read_manifest(output)["metadata"]["generator"]["min_video_frames"] == SMALL["min_video_frames"]

    def fail(*args, **kwargs):
        raise AssertionError("a reused build must not generate videos")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "generate_video", fail)
        assert synthetic.main([*arguments, "--reuse"]) == output
    assert (output / MANIFEST_FILENAME).stat().st_mtime_ns == manifest_time

    with pytest.raises(SystemExit):  # different settings: neither reused nor silently replaced
        synthetic.main([*arguments, "--reuse", "--seed", "1"])
    with pytest.raises(SystemExit):  # no --reuse: the directory is not empty
        synthetic.main(arguments)
    synthetic.main([*arguments, "--seed", "1", "--overwrite", "--reuse"])
    assert read_manifest(output)["metadata"]["generator"]["seed"] == 1
    assert read_manifest(output)["extra_files"] == [synthetic.EVENTS_FILENAME]  # replaced with the dataset
    # A build whose manifest predates `extra_files` is overwritten too (its metadata names the events file).
    manifest = read_manifest(output)
    del manifest["extra_files"]
    (output / MANIFEST_FILENAME).write_text(json.dumps(manifest))
    synthetic.main([*arguments, "--seed", "2", "--overwrite"])
    assert read_manifest(output)["metadata"]["generator"]["seed"] == 2
    with pytest.raises(SystemExit):
        synthetic.main([*arguments, "--set", "no_such_setting=3"])
    # A refused overwrite (a file of the user's beside the dataset) once deleted the events file first, leaving a
    # dataset that `--reuse` no longer recognised; legacy or not, the folder stays whole.
    (output / "notes.txt").write_text("mine")
    for legacy in (False, True):
        if legacy:
            manifest = read_manifest(output)
            del manifest["extra_files"]
            (output / MANIFEST_FILENAME).write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=r"other files \['notes.txt'\]"):
            build(output, seed=3, overwrite=True)
        assert (output / synthetic.EVENTS_FILENAME).is_file()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="`output_dir` .*a_file' exists and is not a directory"):
        build(tmp_path / "a_file", reuse=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["--set", "seed=1"], "`--set seed` is not accepted: `seed` has its own flag, use `--seed 1`"),
        (["--set", "num_train_videos=3"], "use `--num-train-videos 3`"),
        (["--set=text_feature_dim=8"], "use `--text-feature-dim 8`"),
        (["--set", "min_video_frames=800", "--set", "min_video_frames=900"], "given more than once"),
        (["--set", "max_window_frames=32.5"], "`--set max_window_frames` expects an integer, got '32.5'"),
        (["--set", "frame_noise=lots"], "`--set frame_noise` expects a number, got 'lots'"),
    ],
)
def test_cli_set_errors_name_the_flag(tmp_path, capsys, settings, message):
    with pytest.raises(SystemExit):
        synthetic.main(["--output", str(tmp_path / "x"), "--no-progress", *settings])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_set_parsing_without_own_flags_accepts_every_setting():
    # `scripts/quickstart.py --dataset_setting` has no split-size flags: they go through the same parser.
    assert synthetic._parse_overrides(["num_train_videos=3", "frame_noise=0.2"]) == {
        "num_train_videos": 3,
        "frame_noise": 0.2,
    }
    flags = {option for action in synthetic.build_parser()._actions for option in action.option_strings}
    assert set(synthetic.FLAG_SETTINGS.values()) <= flags


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_video_frames": 0}, "min_video_frames"),
        ({"min_event_frames": 30, "max_event_frames": 20}, "must not exceed"),
        ({"num_attributes": 11}, "num_attributes"),
        ({"window_stride": 64}, "window_stride"),
        ({"two_shared_probability": 1.5}, "two_shared_probability"),
        ({"num_train_videos": 0, "num_validation_videos": 0, "num_test_videos": 0}, "At least one split"),
        ({"video_feature_dim": 8.0}, "integer"),
    ],
)
def test_invalid_settings_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        synthetic.SyntheticDatasetSettings(**overrides)


def test_unknown_setting_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown synthetic dataset setting"):
        synthetic.make_synthetic_dataset(tmp_path / "x", colour_count=3)
    assert not (tmp_path / "x").exists()
