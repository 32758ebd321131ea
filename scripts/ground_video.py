"""Ground text queries in your own video with an RGNet model: ranked moments in seconds, JSON and a timeline PNG.

`--video` is a video file (its frames are encoded with `--image_encoder` at the model's frame rate,
`1 / config.seconds_per_frame`, as `scripts/extract_features.py` does) or precomputed features: an RGNet dataset
directory written by `scripts/extract_features.py` (pick the video with `--video_id` when it holds several), or a
`(T, Dv)` array in `.npy`, `.npz` (key `features`), `.pt` or `.safetensors` (key `features`). The feature width
must be the model's `video_feature_dim` (MAD models: CLIP ViT-B/32 `image_embeds`, 512-d, 5 fps). `--image_encoder`
applies only to a video file and `--video_id` only to a dataset directory; either one with another kind of input is
an error. A folder of videos is not an input: extract its features first with `scripts/extract_features.py`.

Where the query features come from (spec §2). RGNet reads a query as **token features** `(Lt, Dt)` and, at
inference, a **sentence embedding** `(Dc,)` in the video feature space for the matching score of spec §7.4:

* Token features. When the model carries a text encoder (`config.text_config` set), the raw query is normalised
  and tokenised by the model folder's processor and the model computes its own token features from `input_ids`
  (`RGNetModel.encode_text`). Otherwise `--text_encoder DIR` is required: a CLIP checkpoint folder (a full
  `CLIPModel` such as `openai/clip-vit-base-patch32` saved locally, or a `CLIPTextModelWithProjection`) with its
  tokenizer. The query is normalised with the model's convention (`config.query_normalization`), tokenised, and
  the token states after the text transformer's final LayerNorm at the positions strictly between the start and
  end tokens are the token features (the recipe of the published MAD and Ego4D features); the processor then
  truncates them to `max_text_tokens` and L2-normalises them.
* Sentence embedding. The projected end-token embedding of the same CLIP text tower
  (`CLIPTextModelWithProjection(...).text_embeds`, the MAD recipe), used when `--text_encoder` is given and its
  width equals the model's `video_feature_dim`. Without one (no `--text_encoder`, a checkpoint without a text
  projection, or a width that differs, as for Ego4D models whose sentence embedding is EgoVLP's), the matching
  score is skipped: a zero sentence embedding makes every matching score 0, so the fused score is the min-max
  normalised proposal score and the ranking is the proposal-score ranking. The script warns and records
  `"matching_score": "unavailable: ..."` in the JSON.

A query whose token count (with the start and end tokens) exceeds what the tokenizer or text encoder accepts is
an error; a query that fits but has more than `max_text_tokens` tokens is truncated as in training. Words the
tokenizer reads only as its unknown token are named in a warning (and in the JSON's `unknown_words`); a query made
only of such words is grounded, but its moments do not depend on its text.

Output: the top `--top_k` moments of each query are printed; `<name>_grounding.json` (all ranked moments, up to
`config.max_predictions`, and the window ranking) and `<name>_timeline.png` (window scores and top moments, see
`visualization_rgnet.plot_timelines`) are written to `--output_dir`. `<name>` is the file name without extension
for a video or feature file, and the whole video id for a dataset video, with `/` written `%2F` (and `%` as `%25`),
so that `a/clip` and `b/clip` get files of their own. An earlier result of the same name is replaced (a log line
names it), as `evaluate_rgnet.py` replaces its predictions.

All (query, window) pairs of the video are grounded from one copy of each window and of each query (the processor's
`share_windows` and `share_queries`), so memory does not grow with a copy of the video per query.

Usage:
    python scripts/ground_video.py --model rgnet-mad --video movie.mp4 --image_encoder clip-vit-base-patch32 \\
        --text_encoder clip-vit-base-patch32 --query "Someone opens the front door." --top_k 5
    python scripts/ground_video.py --model rgnet-mad --video my_features --video_id movie \\
        --text_encoder clip-vit-base-patch32 --query "A car drives away." --query "She smiles."
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_rgnet import MANIFEST_FILENAME, RGNetFeatureStore  # noqa: E402
from modeling_rgnet import RGNetForVideoGrounding  # noqa: E402
from processing_rgnet import RGNetProcessor, normalize_query  # noqa: E402
from scripts.cli import (  # noqa: E402
    add_device_argument,
    check_device_argument,
    load_rgnet_model,
    prepare_output_dir,
    run_script,
    script_parser,
)
from scripts.extract_features import (  # noqa: E402
    VIDEO_EXTENSIONS,
    build_frame_encoder,
    extract_video_features,
    quiet_transformers,
)
from training_rgnet import forward_whole_queries  # noqa: E402
from visualization_rgnet import plot_timelines  # noqa: E402

logger = logging.getLogger("ground_video")

FEATURE_SUFFIXES = (".npy", ".npz", ".pt", ".safetensors")
# Tokenizers without a length limit report a huge sentinel `model_max_length`.
_UNLIMITED_LENGTH = 10**9


# ---- Model and inputs ----


def load_model_and_processor(model_dir: str | os.PathLike, device: str = "cpu"):
    """Load `RGNetForVideoGrounding` and its processor from a `save_pretrained` folder.

    The folder's `processor_config.json` (with its tokenizer) is used when present; otherwise a processor without
    tokenizer is built from the model config's windowing and inference fields.

    Returns:
        `(model, processor)`: the model in eval mode on `device` and an [`RGNetProcessor`].

    Raises:
        ValueError: If `model_dir` holds no RGNet model (no config.json, another kind of model, or no readable
            weights).
    """
    # The config is checked first: another model's folder (a CLIP checkpoint given by mistake) would fail later on a
    # confusing size mismatch, and missing weights would end in transformers' OSError.
    model = load_rgnet_model(model_dir, flag="model").to(device).eval()
    return model, RGNetProcessor.from_model_folder(model_dir, model.config)


def check_video_input(
    video: str | os.PathLike, *, video_id: str | None = None, image_encoder: str | None = None
) -> str:
    """What kind of input `video` is, checked against the options that apply to that kind only (cheap: nothing is
    decoded or loaded, so the command line is checked before the models load).

    Returns:
        `str`: `"dataset"` (an RGNet dataset directory), `"features"` (a feature file) or `"video"` (a video file).

    Raises:
        ValueError: If `video` does not exist, is a folder that holds no RGNet dataset (a folder of videos included),
            or is given with `video_id` (other than for a dataset) or `image_encoder` (other than for a video file).
    """
    path = Path(video)
    if path.is_dir():
        if not (path / MANIFEST_FILENAME).is_file():
            holds_videos = any(item.suffix.lower() in VIDEO_EXTENSIONS and item.is_file() for item in path.rglob("*"))
            what = "holds video files but no RGNet dataset" if holds_videos else "holds no RGNet dataset"
            raise ValueError(
                f"`video` folder {str(path)!r} {what} ({MANIFEST_FILENAME}): give one video file, or extract the "
                f"features of a folder of videos first with `scripts/extract_features.py --video {path} "
                "--output_dir FEATURES` and pass that folder (with `video_id` to pick one of its videos)."
            )
        kind, description = "dataset", "an RGNet dataset folder"
    elif path.is_file() and path.suffix.lower() in FEATURE_SUFFIXES:
        kind, description = "features", "a feature file"
    elif path.is_file():
        kind, description = "video", "a video file"
    else:
        raise ValueError(f"`video` {str(path)!r} does not exist.")
    if video_id is not None and kind != "dataset":
        raise ValueError(
            f"`video_id` {video_id!r} picks a video of an RGNet dataset folder, but `video` {str(path)!r} is "
            f"{description}: leave `video_id` out."
        )
    if image_encoder is not None and kind != "video":
        raise ValueError(
            f"`image_encoder` {image_encoder!r} encodes the frames of a video file, but `video` {str(path)!r} is "
            f"{description} (precomputed features): leave `image_encoder` out."
        )
    return kind


def result_file_stem(name: str) -> str:
    """The stem of a result file named after a video: `name` with `%`, `/` and `\\` percent-encoded, so that it is
    one file name and different names (ids `a/clip` and `b/clip`, or `a%2Fclip`) get different files."""
    return name.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")


def _read_feature_file(path: Path, suffix: str) -> Any:
    """The raw content of a feature file: an array, a `{name: array}` dict, or what a `.pt` file holds."""
    if suffix == ".npy":
        return np.load(path)
    if suffix == ".npz":
        with np.load(path) as archive:
            if "features" in archive.files or len(archive.files) == 1:
                name = "features" if "features" in archive.files else archive.files[0]
                return {name: archive[name]}
            return dict.fromkeys(archive.files)  # names only: which one to read is ambiguous
    if suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    from safetensors.numpy import load_file

    return load_file(str(path))


def _load_feature_file(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()  # `FEAT.NPY` is read as the `.npy` file it is
    try:
        value = _read_feature_file(path, suffix)
    except pickle.UnpicklingError:
        # torch's own message suggests `weights_only=False`, which would run code from the file: not offered here.
        raise ValueError(
            f"`video` {str(path)!r} is not a readable {suffix} feature file: it is corrupt or holds objects other "
            "than tensors (a pickled numpy array? save a torch tensor, or the array as .npy)."
        ) from None
    except Exception as error:  # a corrupt archive, a bad header, a truncated file: all read alike
        raise ValueError(
            f"`video` {str(path)!r} is not a readable {suffix} feature file: {type(error).__name__}: {error}"
        ) from None
    if suffix == ".pt":
        if isinstance(value, dict):
            value = value.get("features")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"`video` {str(path)!r} must hold a tensor (or a dict with 'features').")
        return value.float().numpy()
    if isinstance(value, dict):  # .npz arrays or .safetensors tensors by name
        if "features" in value:
            return value["features"]
        if len(value) == 1:
            return next(iter(value.values()))
        kind = "arrays" if suffix == ".npz" else "tensors"
        raise ValueError(f"`video` {str(path)!r} holds {kind} {sorted(value)}; expected one named 'features'.")
    return value


def load_video_features(
    video: str | os.PathLike,
    *,
    seconds_per_frame: float,
    video_id: str | None = None,
    image_encoder: str | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    expected_dim: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Frame features `(T, Dv)` of the video to ground, from precomputed features or by encoding a video file.

    Args:
        video (`str` or `os.PathLike`): A video file, an RGNet dataset directory, or a `.npy`/`.npz`/`.pt`/
            `.safetensors` feature file.
        seconds_per_frame (`float`): The model's frame duration; a video file is sampled at `1 / seconds_per_frame`
            fps, and dataset features recorded at another rate are rejected.
        video_id (`str`, *optional*): Video of a dataset directory (required when it holds several).
        image_encoder (`str`, *optional*): Frame encoder for a video file (see `scripts/extract_features.py`).
        batch_size (`int`, *optional*, defaults to 32): Frames per encoder call.
        device (`str`, *optional*, defaults to `"cpu"`): Torch device of the encoder.
        expected_dim (`int`, *optional*): The model's `video_feature_dim`; a different width is an error.
        progress (`bool`, *optional*, defaults to `True`): Progress bar while encoding.

    Returns:
        `(features, info)`: float32 `(T, Dv)` and a JSON-serialisable description of the source.

    Raises:
        ValueError: On an unreadable or corrupt video, a missing `image_encoder` or `video_id`, an option that does
            not apply to this kind of input (see [`check_video_input`]), a frame-rate mismatch, or a feature width
            other than `expected_dim`.
    """
    path = Path(video)
    kind = check_video_input(path, video_id=video_id, image_encoder=image_encoder)
    info: dict[str, Any] = {"video": str(path), "name": path.stem if path.is_file() else path.name}
    if kind == "dataset":
        store = RGNetFeatureStore(path)
        if video_id is None:
            if len(store) != 1:
                raise ValueError(
                    f"`video` dataset {str(path)!r} holds {len(store)} videos; choose one with `video_id` "
                    f"(e.g. {list(store.video_ids[:5])})."
                )
            video_id = store.video_ids[0]
        features = store.read_video(video_id)
        recorded = store.metadata.get("seconds_per_frame")
        if recorded is not None and not math.isclose(recorded, seconds_per_frame, rel_tol=1e-4):
            raise ValueError(
                f"`video` features were sampled every {recorded:g} s but the model expects "
                f"config.seconds_per_frame = {seconds_per_frame:g} s; re-extract them with "
                f"`--fps {1 / seconds_per_frame:g}`."
            )
        # The whole id names the results: ids `a/clip` and `b/clip` must not share files.
        info.update(source="dataset", video_id=video_id, name=video_id)
        store.close()
    elif kind == "features":
        features = _load_feature_file(path)
        info["source"] = "features"
    else:
        if image_encoder is None:
            raise ValueError(
                f"`video` {str(path)!r} is a video file: pass `image_encoder` (a CLIP checkpoint folder or "
                "'efficientnet-lite0') to encode its frames, or give precomputed features."
            )
        encoder = build_frame_encoder(image_encoder, device=device)
        if expected_dim is not None and encoder.feature_dim != expected_dim:
            raise ValueError(
                f"`image_encoder` {image_encoder!r} gives {encoder.feature_dim}-d features but the model expects "
                f"config.video_feature_dim = {expected_dim}; use the encoder the model was trained with."
            )
        fps = 1.0 / seconds_per_frame
        features = extract_video_features(path, encoder, fps=fps, batch_size=batch_size, progress=progress)
        info.update(source="video", image_encoder=encoder.describe(), fps=fps)
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"`video` features must have shape (T >= 1, Dv), got {features.shape}.")
    if expected_dim is not None:
        _check_width(features, expected_dim, "`video` features")
    if not np.isfinite(features).all():
        raise ValueError("`video` features contain NaN or infinite values.")
    return features, info


def _check_width(features: np.ndarray, expected_dim: int, what: str) -> None:
    if features.ndim != 2 or features.shape[1] != expected_dim:
        raise ValueError(
            f"{what} have shape {tuple(features.shape)}, but the model expects config.video_feature_dim = "
            f"{expected_dim} per frame; extract them with the encoder the model was trained with."
        )


# ---- Query features ----


def check_query_lengths(tokenizer, texts: Sequence[str], limit: int) -> None:
    """Raise a `ValueError` naming the query when its tokens (with special tokens) exceed `limit`."""
    for text in texts:
        count = len(tokenizer(text, truncation=False, verbose=False)["input_ids"])
        if count > limit:
            raise ValueError(
                f"`query` {text!r} has {count} tokens (with start and end tokens), more than the text encoder "
                f"allows ({limit}); shorten it."
            )


def _query_words(text: str) -> list[str]:
    """The words of `text`: split on spaces, punctuation stripped, empty ones dropped."""
    return [word for word in (part.strip(string.punctuation) for part in text.split()) if word]


def unknown_query_words(tokenizer, text: str) -> list[str]:
    """The words of `text` (split on spaces, punctuation stripped) that `tokenizer` reads only as its unknown token.

    Empty when the tokenizer has no unknown token (`unk_token_id` is `None`). Each word is tokenised alone without
    special tokens, so a tokenizer whose unknown token is also its end token (CLIP's) is read correctly.
    """
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    words = _query_words(text)
    if unknown_id is None or not words:
        return []
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    return [word for word, ids in zip(words, encoded, strict=True) if ids and all(i == unknown_id for i in ids)]


def warn_about_unknown_words(tokenizer, queries: Sequence[str], normalized: Sequence[str]) -> list[list[str]]:
    """Log a warning naming each query with words the tokenizer does not know (see [`unknown_query_words`]).

    Args:
        tokenizer: The tokenizer that reads the queries.
        queries (sequence of `str`): The raw queries (named in the warnings).
        normalized (sequence of `str`): The same queries as tokenised (after the dataset's normalisation).

    Returns:
        `list[list[str]]`: each query's unknown words.
    """
    unknown = [unknown_query_words(tokenizer, text) for text in normalized]
    for query, text, words in zip(queries, normalized, unknown, strict=True):
        if not words:
            continue
        if len(words) == len(_query_words(text)):
            logger.warning(
                "`query` %r: none of its words is in the tokenizer's vocabulary (all read as the unknown token %r); "
                "its moments do not depend on what it says.",
                query,
                tokenizer.unk_token,
            )
        else:
            logger.warning(
                "`query` %r: the word(s) %s are not in the tokenizer's vocabulary (read as the unknown token %r).",
                query,
                words,
                tokenizer.unk_token,
            )
    return unknown


def _token_limit(tokenizer, max_position_embeddings: int | None) -> int:
    limit = tokenizer.model_max_length if tokenizer.model_max_length < _UNLIMITED_LENGTH else math.inf
    if max_position_embeddings is not None:
        limit = min(limit, max_position_embeddings)
    return int(limit) if math.isfinite(limit) else _UNLIMITED_LENGTH


class CLIPQueryEncoder:
    """Query token features and sentence embeddings from a CLIP text tower (spec §2).

    Token features: `last_hidden_state` (after the final LayerNorm) at the positions strictly between the start and
    end tokens. Sentence embedding: `text_embeds`, the projected end-token state (`None` when the checkpoint has
    no text projection).

    Args:
        checkpoint (`str` or `os.PathLike`): CLIP checkpoint with a tokenizer: a full `CLIPModel`, a
            `CLIPTextModelWithProjection` or a `CLIPTextModel`.
        device (`str`, *optional*, defaults to `"cpu"`): Torch device.

    Raises:
        ValueError: If the checkpoint is not a CLIP checkpoint or has no tokenizer.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu"):
        from transformers import AutoConfig, AutoTokenizer, CLIPTextModelWithProjection

        self.checkpoint = str(checkpoint)
        self.device = torch.device(device)
        try:
            config = AutoConfig.from_pretrained(self.checkpoint)
            self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"`text_encoder` {self.checkpoint!r} is not a CLIP checkpoint with a tokenizer: {error}"
            ) from None
        if config.model_type == "clip":
            text_config = config.text_config
            text_config.projection_dim = config.projection_dim  # kept at the top level of a full CLIP config
        elif config.model_type == "clip_text_model":
            text_config = config
        else:
            raise ValueError(
                f"`text_encoder` {self.checkpoint!r} is a {config.model_type!r} checkpoint; expected a CLIP "
                "checkpoint (model_type 'clip' or 'clip_text_model')."
            )
        with quiet_transformers():
            model, info = CLIPTextModelWithProjection.from_pretrained(
                self.checkpoint, config=text_config, output_loading_info=True
            )
        self.has_projection = not any(key.startswith("text_projection") for key in info["missing_keys"])
        self.model = model.to(self.device).eval()
        self.hidden_size = text_config.hidden_size
        self.embedding_dim = text_config.projection_dim if self.has_projection else None
        self.max_tokens = _token_limit(self.tokenizer, text_config.max_position_embeddings)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Encode already-normalised queries.

        Args:
            texts (sequence of `str`): Queries after the dataset's normalisation.

        Returns:
            `(token_features, sentence_embeddings)`: one float32 `(Lt_i, Dt)` array per query, and float32
            `(Nq, Dc)` or `None` without a text projection.

        Raises:
            ValueError: If a query has more tokens than the tokenizer or text encoder allows, or none between the
                start and end tokens.
        """
        check_query_lengths(self.tokenizer, texts, self.max_tokens)
        # Right padding: each row's states are read from position 1 to its length, and CLIP pools its end token.
        encoded = self.tokenizer(list(texts), padding="longest", padding_side="right", return_tensors="pt")
        encoded = encoded.to(self.device)
        outputs = self.model(**encoded)
        lengths = encoded["attention_mask"].sum(dim=1)
        token_features = []
        for index, text in enumerate(texts):
            states = outputs.last_hidden_state[index, 1 : int(lengths[index]) - 1]  # between start and end tokens
            if states.shape[0] == 0:
                raise ValueError(f"`query` {text!r} has no token between the start and end tokens.")
            token_features.append(states.float().cpu().numpy())
        embeddings = outputs.text_embeds.float().cpu().numpy() if self.has_projection else None
        return token_features, embeddings

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description for the output file."""
        return {"checkpoint": self.checkpoint, "hidden_size": self.hidden_size, "embedding_dim": self.embedding_dim}


# ---- Grounding ----


def ground(
    model: RGNetForVideoGrounding,
    processor: RGNetProcessor,
    video_features: np.ndarray,
    queries: Sequence[str],
    *,
    query_encoder: CLIPQueryEncoder | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[list[dict[str, torch.Tensor]], Any, dict[str, Any]]:
    """Run RGNet on every (query, window) pair of one video and post-process to ranked moments (spec §7).

    Args:
        model ([`RGNetForVideoGrounding`]): The model, in eval mode.
        processor ([`RGNetProcessor`]): Its processor.
        video_features (`np.ndarray` of shape `(T, Dv)`): The video's frame features.
        queries (sequence of `str`): Raw queries.
        query_encoder ([`CLIPQueryEncoder`], *optional*): Token features when the model has no text encoder, and
            the sentence embedding of the matching score (see the module docstring).
        batch_size (`int`, *optional*, defaults to 16): (query, window) pairs per forward pass, rounded down to whole
            queries (at least one: a query's windows are ranked together).
        progress (`bool`, *optional*, defaults to `True`): Progress bar over forward passes.

    Returns:
        `(predictions, window_metadata, info)`: `post_process_video_grounding`'s list (one dict per query), the
        batch's window metadata, and `{"normalized_queries", "matching_score", "unknown_words"}` (per query, the
        words its tokenizer reads only as the unknown token; a warning names each such query).

    Raises:
        ValueError: On an empty or too long query, a missing text encoder, or a text encoder whose width is not the
            model's `text_feature_dim`.
    """
    config = model.config
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if isinstance(queries, str) or len(queries) == 0:
        raise ValueError("`query` must be a non-empty list of query strings.")
    normalized = []
    for text in queries:
        try:
            normalized.append(normalize_query(text, processor.query_normalization))
        except ValueError as error:
            raise ValueError(f"`query` {text!r} is not usable: {error}") from None

    if config.text_config is not None:
        # The model computes its own token features from input_ids.
        if processor.tokenizer is None:
            if query_encoder is None:
                raise ValueError(
                    "The model has a text encoder but its folder has no tokenizer (processor); pass `text_encoder` "
                    "(a CLIP checkpoint folder with a tokenizer)."
                )
            processor.tokenizer = query_encoder.tokenizer
        limit = _token_limit(processor.tokenizer, config.text_config.max_position_embeddings)
        check_query_lengths(processor.tokenizer, normalized, limit)
        unknown_words = warn_about_unknown_words(processor.tokenizer, queries, normalized)
        query_inputs = {"text": list(queries)}
        sentence_embeddings = query_encoder.encode(normalized)[1] if query_encoder is not None else None
    else:
        if query_encoder is None:
            raise ValueError(
                "The model has no text encoder (config.text_config is None): pass `text_encoder`, a CLIP checkpoint "
                "folder, to compute the query token features."
            )
        if query_encoder.hidden_size != config.text_feature_dim:
            raise ValueError(
                f"`text_encoder` {query_encoder.checkpoint!r} gives {query_encoder.hidden_size}-d token features but "
                f"the model expects config.text_feature_dim = {config.text_feature_dim}."
            )
        unknown_words = warn_about_unknown_words(query_encoder.tokenizer, queries, normalized)
        token_features, sentence_embeddings = query_encoder.encode(normalized)
        query_inputs = {"text_features": token_features}

    video_dim = video_features.shape[1]
    if sentence_embeddings is not None and sentence_embeddings.shape[1] == video_dim:
        matching = f"CLIP text_embeds of {query_encoder.checkpoint}"
    else:
        if query_encoder is None:
            reason = "no `text_encoder` given"
        elif sentence_embeddings is None:
            reason = f"`text_encoder` {query_encoder.checkpoint!r} has no text projection"
        else:
            reason = (
                f"the text encoder's sentence embedding is {sentence_embeddings.shape[1]}-d, not the video "
                f"features' {video_dim}-d"
            )
        logger.warning("Matching score skipped (%s): moments are ranked by proposal score only.", reason)
        matching = f"unavailable: {reason}; moments ranked by proposal score"
        # A zero sentence embedding gives matching scores of 0, so the fusion reduces to the proposal score.
        sentence_embeddings = np.zeros((len(queries), video_dim), dtype=np.float32)

    # Each window and each query once, read by pair index: a copy of every window per query would cost about 150 MB
    # per query on a 2-hour MAD movie.
    inputs = processor(video_features=video_features, share_windows=True, share_queries=True, **query_inputs)
    metadata = inputs.window_metadata
    # Whole queries per forward pass: the model decodes only each query's windows that post-processing keeps.
    with torch.inference_mode():
        outputs = forward_whole_queries(
            model,
            inputs,
            metadata.num_windows,
            queries_per_forward=batch_size // metadata.num_windows,
            top_k_windows=processor.top_k_windows,
            progress=progress,
        )
    predictions = processor.post_process_video_grounding(
        outputs, metadata, video_features=video_features, sentence_embeddings=sentence_embeddings
    )
    info = {"normalized_queries": normalized, "matching_score": matching, "unknown_words": unknown_words}
    return predictions, metadata, info


def format_predictions(
    predictions: Sequence[dict[str, torch.Tensor]], window_metadata: Any, queries: Sequence[str]
) -> list[dict[str, Any]]:
    """JSON-ready per-query results: ranked moments (seconds and scores) and the ranked windows."""
    delta = window_metadata.seconds_per_frame
    results = []
    for query, prediction in zip(queries, predictions, strict=True):
        rows = prediction["predictions"].tolist()
        moments = [
            {
                "rank": rank + 1,
                "start": row[0],
                "end": row[1],
                "score": row[4],
                "proposal_score": row[2],
                "matching_score": row[3],
            }
            for rank, row in enumerate(rows)
        ]
        windows = []
        for window, score in zip(
            prediction["window_ranking"].tolist(), prediction["window_scores"].tolist(), strict=True
        ):
            offset = int(window_metadata.window_offsets[window])
            length = int(window_metadata.window_lengths[window])
            windows.append(
                {"window": window, "start": offset * delta, "end": (offset + length) * delta, "score": score}
            )
        results.append({"query": query, "moments": moments, "windows": windows})
    return results


def print_top_moments(results: Sequence[dict[str, Any]], top_k: int) -> None:
    """Print the top `top_k` moments of each query as a table."""
    for index, result in enumerate(results):
        print(f'Query {index + 1}: "{result["query"]}"')
        print(f"{'rank':>5} {'start (s)':>10} {'end (s)':>10} {'score':>8} {'proposal':>9} {'matching':>9}")
        for moment in result["moments"][:top_k]:
            print(
                f"{moment['rank']:>5} {moment['start']:>10.2f} {moment['end']:>10.2f} {moment['score']:>8.3f} "
                f"{moment['proposal_score']:>9.4f} {moment['matching_score']:>9.4f}"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser(__doc__)
    parser.add_argument("--model", required=True, help="RGNet model folder (save_pretrained or converted)")
    parser.add_argument(
        "--video", required=True, help="video file, RGNet dataset folder, or .npy/.npz/.pt/.safetensors features"
    )
    parser.add_argument("--query", required=True, action="append", help="query text (repeat for several queries)")
    parser.add_argument(
        "--video_id", default=None, help="only for a dataset folder: its video (when it holds several)"
    )
    parser.add_argument(
        "--image_encoder", default=None, help="only for a video file: CLIP folder or 'efficientnet-lite0'"
    )
    parser.add_argument("--text_encoder", default=None, help="CLIP checkpoint folder (token features, sentence emb.)")
    parser.add_argument("--top_k", type=int, default=5, help="moments printed and plotted per query")
    parser.add_argument(
        "--output_dir",
        default=".",
        help="where <name>_grounding.json and <name>_timeline.png go (<name>: the file's stem or the dataset video id, "
        "'/' as %%2F; an earlier result of that name is replaced)",
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=16,
        help="(query, window) pairs per forward pass (whole queries, at least one)",
    )
    add_device_argument(parser)
    parser.add_argument("--no_plot", action="store_true", help="skip the timeline PNG")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    for flag in ("top_k", "batch_size"):  # usage errors, before the model loads
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    check_device_argument(parser, args.device)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # The inputs and the output folder are checked before the models load and the video is encoded.
    check_video_input(args.video, video_id=args.video_id, image_encoder=args.image_encoder)
    output_dir = prepare_output_dir(args.output_dir)
    model, processor = load_model_and_processor(args.model, device=args.device)
    query_encoder = CLIPQueryEncoder(args.text_encoder, device=args.device) if args.text_encoder else None
    features, video_info = load_video_features(
        args.video,
        seconds_per_frame=processor.seconds_per_frame,
        video_id=args.video_id,
        image_encoder=args.image_encoder,
        device=args.device,
        expected_dim=model.config.video_feature_dim,
        progress=not args.no_progress,
    )
    predictions, metadata, info = ground(
        model,
        processor,
        features,
        args.query,
        query_encoder=query_encoder,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    results = format_predictions(predictions, metadata, args.query)
    for result, normalized, unknown in zip(results, info["normalized_queries"], info["unknown_words"], strict=True):
        result["normalized_query"] = normalized
        result["unknown_words"] = unknown
    print_top_moments(results, args.top_k)

    name = result_file_stem(video_info["name"])
    report = {
        "model": str(args.model),
        **video_info,
        "text_encoder": query_encoder.describe() if query_encoder is not None else None,
        "matching_score": info["matching_score"],
        "seconds_per_frame": metadata.seconds_per_frame,
        "num_frames": metadata.num_frames,
        "duration": metadata.num_frames * metadata.seconds_per_frame,
        "num_windows": metadata.num_windows,
        "top_k": args.top_k,
        "queries": results,
    }
    json_path = output_dir / f"{name}_grounding.json"
    png_path = output_dir / f"{name}_timeline.png"
    for path in [json_path] if args.no_plot else [json_path, png_path]:
        if path.exists():  # a re-run for the same video: said, not silent
            logger.info("replacing the earlier %s", path)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    report["json_path"] = str(json_path)
    if not args.no_plot:
        plot_timelines(predictions, metadata, queries=args.query, top_k=args.top_k, output_path=png_path)
        report["png_path"] = str(png_path)
    logger.info("wrote %s", ", ".join(str(report[key]) for key in ("json_path", "png_path") if key in report))
    return report


__all__ = [
    "CLIPQueryEncoder",
    "check_query_lengths",
    "check_video_input",
    "format_predictions",
    "ground",
    "load_model_and_processor",
    "load_video_features",
    "main",
    "print_top_moments",
    "result_file_stem",
    "unknown_query_words",
    "warn_about_unknown_words",
]

if __name__ == "__main__":
    run_script(main)
