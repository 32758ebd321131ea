"""Generate the project's embedded long-video grounding dataset (a stand-in for MAD / Ego4D-NLQ features).

MAD and Ego4D features cannot be downloaded everywhere, so this script writes a small, fully synthetic dataset in
exactly the project's layout (`data_rgnet.py`: query tables + sharded frame-feature store, the same query columns
as the MAD converter with text features: `query_id`, `query`, `video_id`, `duration`, `timestamps`, `split`,
`clip_id`, `text_features`, `sentence_embedding`). It is deterministic from `seed` (same seed and settings give
bit-identical features and rows) and small enough to train RGNet on two CPU cores in minutes, while still needing
both of RGNet's jobs: finding the right window of a long video (retrieval) and the right span inside it
(grounding).

Design (defaults in brackets; every number is a `SyntheticDatasetSettings` field):

* **Vocabulary.** Three closed word classes with real words: attributes (colours), objects and actions [8 of each,
  out of 10 listed], plus function words (`the`, `a`, `that`, `is`, ...). A description is a triple
  (attribute, object, action); e.g. `("red", "car", "jumps")`.
* **Text side (token features, `Dt` [64]).** Every word gets a fixed random unit vector in text space (drawn from
  the seed). A query is a real sentence built from one of a few templates, e.g. "The red car jumps.",
  "A car that is red jumps.", "The red car jumps on screen.". Its token features are the vectors of its words in
  order (lower-cased, final `.` dropped; one token per word, function words included) plus Gaussian noise of norm
  about `text_noise` [0.1] per token; they are stored raw (the processor L2-normalises them). The word order of
  the templates varies, so a model must pick the content words out of the sentence; a bag of word vectors
  suffices. `encode_query` computes the noise-free features of any sentence over the vocabulary.
* **Video side (frame features, `Dv` [64]).** Every attribute, object and action word also has a "visual
  signature": a random unit vector in video space drawn independently of its word vector, so the model has to
  learn the text-to-video correspondence from data. A video has `T` frames [1,600-2,800, at 0.5 s per frame:
  13-23 minutes, 50-90 windows of 64 frames at stride 32]. Frame `t` is

      background_t + envelope_t · gain · Σ_{c ∈ event} (signature_scale · signature_c + jitter_c) + noise_t

  where the background is a slowly drifting AR(1) process (correlation time `background_correlation_frames`
  [100 frames]) rescaled to norm `background_scale` [1.0] per frame; events add the sum of their three concept
  signatures (norm `signature_scale` [0.6] each, plus per-event jitter of norm about `signature_jitter` [0.1]
  per concept, times a per-event gain in [`min_event_gain`, `max_event_gain`] [0.8-1.2]); the envelope rises
  and falls linearly over `onset_frames` [3] frames at each end (soft onset); noise is i.i.d. Gaussian of norm
  about `frame_noise` [0.3].
* **Events.** A video holds [3-5] target events, each with [3] distractor events that share words with it.
  Distractor `k` changes the slot `order[k mod 3]` of the target (a random order of attribute, object, action per
  target) and, with probability `1 - two_shared_probability` [0.3], one more slot; so a target typically has one
  distractor agreeing with it on each pair of words, e.g. target "red car jumps", distractors "blue car jumps",
  "red dog jumps", "red car spins" (or "red boat rolls" when a second slot changes). All event triples of a video
  are distinct, so a query's full triple identifies exactly one event; matching only one or two of its words does
  not (see "Sanity check" below). Events last [10-60 frames = 5-30 s] and are placed in random order with at
  least `min_event_gap_frames` [64 = `max_window_frames`] background frames between them, so no window of the
  recommended length overlaps two events: the distractors of a target lie in other windows of the same video. If
  the drawn `T` cannot hold all events with those gaps, the video is lengthened to fit.
* **Queries.** One per target event: `timestamps` = `[start_frame, end_frame] · seconds_per_frame` (seconds,
  end exclusive frame boundary), `duration` = `T · seconds_per_frame`. `sentence_embedding` (`Dc = Dv`, used by
  RGNet's matching score at inference) is the normalised sum of the three concept signatures plus noise of norm
  about `sentence_noise` [0.05], the analogue of a CLIP sentence embedding living in the frame-feature space.
* **Splits.** `train` [100 videos], `validation` [16] and `test` [16], on disjoint videos. Each video is drawn
  from its own random stream (seed, split, index), so a video does not change when other splits are resized.

Besides the standard layout the directory holds `synthetic_events.json` (every event of every video: triple,
frames, role, the query it belongs to or distracts), and the manifest's metadata records `seconds_per_frame`,
`recommended_config` (the `RGNetConfig` fields that follow from the data: feature widths, window length and
stride, text tokens, seconds per frame, query normalisation), the vocabulary, and `generator` (every setting, so
`reuse=True` can recognise an identical earlier build).

Default size: 132 videos, about 290,000 frames (74 MB of features), about 530 queries (406 / 59 / 65 for seed 0);
the build takes about 1 s of generation (2 s with imports) on one of this project's 2-core machines.

Sanity check (seed 0, test split, windows of 64 frames at stride 32; non-learned baselines, not part of the
package): random window and span: window recall@1 0.04, R@1 IoU>0.5 0.01. Oracle (cosine between the
`sentence_embedding` and the frames; windows ranked by their best frame; span = the run of frames around the best
one above half its cosine): window recall@1 0.98, R@1 IoU>0.5 0.91, so the task is solvable from the features.
The same oracle with only two of the three words (e.g. attribute + object) falls to window recall@1 0.49-0.62, and
with the object alone to 0.23: the distractors make all three words necessary. With the oracle's window, the whole
window as the span gives R@1 IoU>0.5 0.23, and a random span in it 0.20: the span must really be localised.

Example:

```
python scripts/make_synthetic_dataset.py --output data/synthetic --seed 0 --reuse
```

```python
>>> from scripts.make_synthetic_dataset import make_synthetic_dataset
>>> from configuration_rgnet import RGNetConfig
>>> from data_rgnet import load_rgnet_dataset
>>> path = make_synthetic_dataset("data/synthetic", seed=0, reuse=True)
>>> queries, store = load_rgnet_dataset(path)
>>> config = RGNetConfig(**store.metadata["recommended_config"], hidden_size=64, num_attention_heads=4)
```
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from scipy.signal import lfilter
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_rgnet import (  # noqa: E402
    INCOMPLETE_MARKER_FILENAME,
    MANIFEST_FILENAME,
    RGNetDatasetWriter,
    check_dataset_output_dir,
    read_manifest,
)
from scripts.cli import run_script, script_parser  # noqa: E402

logger = logging.getLogger("make_synthetic_dataset")

# Bump when the same settings would produce different data (invalidates `reuse`).
GENERATOR_VERSION = 1
EVENTS_FILENAME = "synthetic_events.json"
SPLITS = ("train", "validation", "test")

# Word classes (real words). Only the first `num_attributes` / `num_objects` / `num_actions` are used, but vectors
# are drawn for all of them, so a word's vectors do not depend on how many words are used.
ATTRIBUTES = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple", "pink", "grey")
OBJECTS = ("car", "dog", "ball", "bird", "horse", "boat", "kite", "robot", "train", "cat")
ACTIONS = ("jumps", "spins", "rolls", "stops", "falls", "bounces", "shakes", "turns", "flies", "slides")
FUNCTION_WORDS = ("the", "a", "that", "is", "again", "once", "on", "screen", "in", "scene", "for", "while")
# Query templates over word slots; `{suffix}` is empty or one of `QUERY_SUFFIXES`.
QUERY_TEMPLATES = (
    "{det} {attribute} {object} {action}{suffix}",
    "{det} {object} that is {attribute} {action}{suffix}",
)
QUERY_DETERMINERS = ("the", "a")
QUERY_SUFFIXES = ("", " again", " once", " on screen", " in the scene", " for a while")


# ---- Settings ----


@dataclass(frozen=True)
class SyntheticDatasetSettings:
    """Every setting of the generator (see the module docstring for what each number does).

    Attributes:
        seed (`int`): Seed of every random draw.
        num_train_videos, num_validation_videos, num_test_videos (`int`): Videos per split (disjoint).
        video_feature_dim (`int`): `Dv`, also the sentence-embedding width `Dc`.
        text_feature_dim (`int`): `Dt` of the query token features.
        num_attributes, num_objects, num_actions (`int`): Words used of each class (2 to 10).
        min_video_frames, max_video_frames (`int`): Range of the drawn video length `T` (a video is lengthened
            when its events do not fit).
        min_targets_per_video, max_targets_per_video (`int`): Range of target events (= queries) per video.
        distractors_per_target (`int`): Distractor events per target, each sharing 1 or 2 of its 3 words.
        two_shared_probability (`float`): Probability that a distractor shares 2 words (else 1).
        min_event_frames, max_event_frames (`int`): Range of event lengths in frames.
        min_event_gap_frames (`int`): Background frames at least between two events.
        onset_frames (`int`): Frames of the linear rise (and fall) of an event's signal.
        seconds_per_frame (`float`): Duration of one frame feature.
        background_correlation_frames (`float`): Correlation time of the AR(1) background drift.
        background_scale (`float`): Norm of the background of every frame.
        signature_scale (`float`): Norm of each concept signature added to event frames.
        signature_jitter (`float`): Approximate norm of the per-event perturbation of each concept signature.
        min_event_gain, max_event_gain (`float`): Range of the per-event signal gain.
        frame_noise (`float`): Approximate norm of the i.i.d. per-frame noise.
        text_noise (`float`): Approximate norm of the noise added to each token feature.
        sentence_noise (`float`): Approximate norm of the noise added to the sentence embedding.
        max_window_frames, window_stride, max_text_tokens (`int`): Recommended `RGNetConfig` windowing, recorded
            in the manifest (`min_event_gap_frames` should be at least `max_window_frames`).
        generator_version (`int`): Version of the generation code (part of the `reuse` check).
    """

    seed: int = 0
    num_train_videos: int = 100
    num_validation_videos: int = 16
    num_test_videos: int = 16
    video_feature_dim: int = 64
    text_feature_dim: int = 64
    num_attributes: int = 8
    num_objects: int = 8
    num_actions: int = 8
    min_video_frames: int = 1600
    max_video_frames: int = 2800
    min_targets_per_video: int = 3
    max_targets_per_video: int = 5
    distractors_per_target: int = 3
    two_shared_probability: float = 0.7
    min_event_frames: int = 10
    max_event_frames: int = 60
    min_event_gap_frames: int = 64
    onset_frames: int = 3
    seconds_per_frame: float = 0.5
    background_correlation_frames: float = 100.0
    background_scale: float = 1.0
    signature_scale: float = 0.6
    signature_jitter: float = 0.1
    min_event_gain: float = 0.8
    max_event_gain: float = 1.2
    frame_noise: float = 0.3
    text_noise: float = 0.1
    sentence_noise: float = 0.05
    max_window_frames: int = 64
    window_stride: int = 32
    max_text_tokens: int = 16
    generator_version: int = field(default=GENERATOR_VERSION)

    def __post_init__(self):
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"`{item.name}` must be an integer, got {value!r}.")
            if item.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"`{item.name}` must be a finite number, got {value!r}.")
                object.__setattr__(self, item.name, float(value))
        non_negative = ("seed", "num_train_videos", "num_validation_videos", "num_test_videos")
        non_negative += ("distractors_per_target", "min_event_gap_frames", "onset_frames")
        non_negative += ("signature_jitter", "frame_noise", "text_noise", "sentence_noise")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be non-negative, got {getattr(self, name)!r}.")
        positive = ("video_feature_dim", "text_feature_dim", "min_video_frames", "min_targets_per_video")
        positive += ("min_event_frames", "seconds_per_frame", "background_correlation_frames", "background_scale")
        positive += ("signature_scale", "min_event_gain", "max_window_frames", "window_stride", "max_text_tokens")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}.")
        for low, high in (
            ("min_video_frames", "max_video_frames"),
            ("min_targets_per_video", "max_targets_per_video"),
            ("min_event_frames", "max_event_frames"),
            ("min_event_gain", "max_event_gain"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"`{low}` ({getattr(self, low)}) must not exceed `{high}` ({getattr(self, high)}).")
        for name, words in (("num_attributes", ATTRIBUTES), ("num_objects", OBJECTS), ("num_actions", ACTIONS)):
            if not 2 <= getattr(self, name) <= len(words):
                raise ValueError(f"`{name}` must be in [2, {len(words)}], got {getattr(self, name)!r}.")
        if not 0.0 <= self.two_shared_probability <= 1.0:
            raise ValueError(f"`two_shared_probability` must be in [0, 1], got {self.two_shared_probability}.")
        if self.window_stride >= self.max_window_frames:
            raise ValueError(
                f"`window_stride` ({self.window_stride}) must be smaller than `max_window_frames` "
                f"({self.max_window_frames})."
            )
        if self.num_train_videos + self.num_validation_videos + self.num_test_videos == 0:
            raise ValueError("At least one split must have a video.")
        if self.min_event_gap_frames < self.max_window_frames:
            logger.warning(
                "min_event_gap_frames (%d) < max_window_frames (%d): a window may overlap two events",
                self.min_event_gap_frames,
                self.max_window_frames,
            )
        events = self.max_targets_per_video * (1 + self.distractors_per_target)
        if events > self.num_attributes * self.num_objects * self.num_actions:
            raise ValueError(
                f"{events} events per video cannot all have distinct (attribute, object, action) triples."
            )

    def videos_per_split(self) -> dict[str, int]:
        """Number of videos of each split, in split order."""
        return dict(
            zip(SPLITS, (self.num_train_videos, self.num_validation_videos, self.num_test_videos), strict=True)
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (stored in the manifest as `metadata["generator"]`)."""
        return dataclasses.asdict(self)

    def recommended_config(self) -> dict[str, Any]:
        """`RGNetConfig` fields that follow from the data (feature widths, windowing, frame duration, text)."""
        return {
            "video_feature_dim": self.video_feature_dim,
            "text_feature_dim": self.text_feature_dim,
            "pooled_text_dim": self.video_feature_dim,
            "max_window_frames": self.max_window_frames,
            "window_stride": self.window_stride,
            "max_text_tokens": self.max_text_tokens,
            "seconds_per_frame": self.seconds_per_frame,
            "query_normalization": "mad",
        }


# ---- Vocabulary: word vectors (text space) and concept signatures (video space) ----


@dataclass(frozen=True, eq=False)
class SyntheticVocabulary:
    """The words of the synthetic descriptions with their token vectors and visual signatures.

    Attributes:
        attributes, objects, actions (`tuple[str, ...]`): The words used of each class.
        function_words (`tuple[str, ...]`): Words of the query templates without visual meaning.
        word_vectors (`dict[str, np.ndarray]`): Unit vector `(Dt,)` (float64) of every word.
        signatures (`dict[str, np.ndarray]`): Unit visual signature `(Dv,)` (float64) of every attribute, object
            and action word.
    """

    attributes: tuple[str, ...]
    objects: tuple[str, ...]
    actions: tuple[str, ...]
    function_words: tuple[str, ...]
    word_vectors: dict[str, np.ndarray]
    signatures: dict[str, np.ndarray]

    @property
    def classes(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """`(attributes, objects, actions)`: the words of the three slots of a triple."""
        return self.attributes, self.objects, self.actions

    def triple_words(self, triple: Sequence[int]) -> tuple[str, str, str]:
        """Words `(attribute, object, action)` of a triple of indices."""
        return tuple(words[index] for words, index in zip(self.classes, triple, strict=True))

    def event_signature(self, words: Sequence[str]) -> np.ndarray:
        """Sum of the unit signatures of the given concept words, `(Dv,)` float64."""
        return np.sum([self.signatures[word] for word in words], axis=0)

    def to_dict(self) -> dict[str, list[str]]:
        """The word lists (JSON-serialisable)."""
        return {
            "attributes": list(self.attributes),
            "objects": list(self.objects),
            "actions": list(self.actions),
            "function_words": list(self.function_words),
        }


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build_vocabulary(settings: SyntheticDatasetSettings) -> SyntheticVocabulary:
    """Draw the word vectors and concept signatures (depend only on `seed` and the two feature widths).

    Args:
        settings (`SyntheticDatasetSettings`): Generator settings.

    Returns:
        [`SyntheticVocabulary`].
    """
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(0,)))
    all_words = ATTRIBUTES + OBJECTS + ACTIONS + FUNCTION_WORDS
    concepts = ATTRIBUTES + OBJECTS + ACTIONS
    word_vectors = dict(zip(all_words, _unit_rows(rng, len(all_words), settings.text_feature_dim), strict=True))
    signatures = dict(zip(concepts, _unit_rows(rng, len(concepts), settings.video_feature_dim), strict=True))
    return SyntheticVocabulary(
        attributes=ATTRIBUTES[: settings.num_attributes],
        objects=OBJECTS[: settings.num_objects],
        actions=ACTIONS[: settings.num_actions],
        function_words=FUNCTION_WORDS,
        word_vectors=word_vectors,
        signatures=signatures,
    )


def query_tokens(text: str) -> list[str]:
    """Word tokens of a query: lower-cased, surrounding `.`/`?`/spaces stripped, split on whitespace."""
    return text.strip().strip(".?").lower().split()


def encode_query(text: str, vocabulary: SyntheticVocabulary) -> np.ndarray:
    """Noise-free token features of a sentence over the synthetic vocabulary.

    Args:
        text (`str`): A sentence made of vocabulary words (e.g. "The red car jumps.").
        vocabulary (`SyntheticVocabulary`): The dataset's vocabulary (`load_synthetic_vocabulary`).

    Returns:
        `np.ndarray` float32 `(num_words, Dt)`: one word vector per token.

    Raises:
        ValueError: If the sentence is empty or holds a word outside the vocabulary.
    """
    tokens = query_tokens(text)
    if not tokens:
        raise ValueError(f"`text` holds no word: {text!r}.")
    unknown = [token for token in tokens if token not in vocabulary.word_vectors]
    if unknown:
        raise ValueError(f"Words {unknown} of {text!r} are not in the synthetic vocabulary.")
    return np.stack([vocabulary.word_vectors[token] for token in tokens]).astype(np.float32)


# ---- One video ----


@dataclass(frozen=True)
class SyntheticEvent:
    """One planted event of a video.

    Attributes:
        attribute, object, action (`str`): Its description triple.
        start_frame, end_frame (`int`): Frames `[start_frame, end_frame)` carrying its signal.
        role (`str`): `"target"` (has a query) or `"distractor"`.
        query_id (`str`): Target: its query; distractor: the query of the target it was drawn for.
    """

    attribute: str
    object: str
    action: str
    start_frame: int
    end_frame: int
    role: str
    query_id: str

    @property
    def words(self) -> tuple[str, str, str]:
        """`(attribute, object, action)`."""
        return self.attribute, self.object, self.action


@dataclass(frozen=True)
class SyntheticVideo:
    """A generated video with its events and query rows.

    Attributes:
        video_id (`str`): Feature-store key.
        features (`np.ndarray`): float32 `(T, Dv)` frame features.
        events (`list[SyntheticEvent]`): Every event, in time order.
        queries (`list[dict]`): Query rows (one per target event, in time order) with all dataset columns but
            `split`.
    """

    video_id: str
    features: np.ndarray
    events: list[SyntheticEvent]
    queries: list[dict[str, Any]]


def _draw_triples(
    rng: np.random.Generator, settings: SyntheticDatasetSettings, num_targets: int
) -> tuple[list[tuple[int, int, int]], list[tuple[tuple[int, int, int], int]]]:
    """Distinct target triples and, per target, distractor triples sharing 1 or 2 slots (all triples distinct).

    Distractor `k` of a target always changes slot `order[k mod 3]` (a random order of attribute, object, action per
    target), so that the first three distractors cover the three pairs of words that can be shared; with
    probability `1 - two_shared_probability` it also changes one more slot and shares a single word.
    """
    sizes = (settings.num_attributes, settings.num_objects, settings.num_actions)
    flat = rng.choice(sizes[0] * sizes[1] * sizes[2], size=num_targets, replace=False)
    targets = [tuple(int(value) for value in np.unravel_index(index, sizes)) for index in flat]
    used = set(targets)
    distractors = []
    for target_index, target in enumerate(targets):
        slot_order = rng.permutation(3)
        for number in range(settings.distractors_per_target):
            changed = [int(slot_order[number % 3])]
            if rng.random() >= settings.two_shared_probability:
                changed.append(int(slot_order[(number + 1 + rng.integers(2)) % 3]))
            for _attempt in range(100):
                triple = list(target)
                for slot in changed:
                    other = int(rng.integers(0, sizes[slot] - 1))
                    triple[slot] = other + (other >= target[slot])  # any value but the target's
                triple = tuple(triple)
                if triple not in used:
                    break
            else:  # only with a tiny vocabulary and many events
                raise ValueError("Could not draw distinct distractor triples; enlarge the vocabulary.")
            used.add(triple)
            distractors.append((triple, target_index))
    return targets, distractors


def _event_envelope(length: int, onset_frames: int) -> np.ndarray:
    """Signal amplitude over an event's frames: linear rise and fall over `onset_frames` frames, 1 in between."""
    position = np.arange(length, dtype=np.float64)
    ramp = np.minimum(position + 1, length - position) / (onset_frames + 1)
    return np.minimum(ramp, 1.0)


def _drifting_background(rng: np.random.Generator, num_frames: int, settings: SyntheticDatasetSettings) -> np.ndarray:
    """Stationary AR(1) process with unit-variance dimensions, each frame rescaled to norm `background_scale`."""
    rho = math.exp(-1.0 / settings.background_correlation_frames)
    initial = rng.standard_normal(settings.video_feature_dim)
    innovations = rng.standard_normal((num_frames, settings.video_feature_dim))
    drift, _ = lfilter([math.sqrt(1.0 - rho * rho)], [1.0, -rho], innovations, axis=0, zi=rho * initial[None, :])
    return settings.background_scale * drift / np.linalg.norm(drift, axis=1, keepdims=True)


def _query_text(rng: np.random.Generator, words: tuple[str, str, str]) -> str:
    template = QUERY_TEMPLATES[int(rng.integers(len(QUERY_TEMPLATES)))]
    determiner = QUERY_DETERMINERS[int(rng.integers(len(QUERY_DETERMINERS)))]
    suffix = QUERY_SUFFIXES[int(rng.integers(len(QUERY_SUFFIXES)))]
    sentence = template.format(det=determiner, attribute=words[0], object=words[1], action=words[2], suffix=suffix)
    return sentence[0].upper() + sentence[1:] + "."


def generate_video(
    settings: SyntheticDatasetSettings, vocabulary: SyntheticVocabulary, split: str, index: int
) -> SyntheticVideo:
    """Generate one video: frame features, events and query rows (its own random stream: seed, split, index).

    Args:
        settings (`SyntheticDatasetSettings`): Generator settings.
        vocabulary (`SyntheticVocabulary`): From `build_vocabulary(settings)`.
        split (`str`): One of `SPLITS`.
        index (`int`): Video number within the split.

    Returns:
        [`SyntheticVideo`].

    Raises:
        ValueError: If `split` is not one of `SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(1, SPLITS.index(split), index)))
    video_id = f"synthetic-{split}-{index:04d}"
    dim = settings.video_feature_dim

    # Layout: events in random order, at least `min_event_gap_frames` apart, the slack spread at random.
    num_frames = int(rng.integers(settings.min_video_frames, settings.max_video_frames + 1))
    num_targets = int(rng.integers(settings.min_targets_per_video, settings.max_targets_per_video + 1))
    targets, distractors = _draw_triples(rng, settings, num_targets)
    triples = targets + [triple for triple, _ in distractors]
    lengths = rng.integers(settings.min_event_frames, settings.max_event_frames + 1, size=len(triples))
    order = rng.permutation(len(triples))
    required = int(lengths.sum()) + (len(triples) - 1) * settings.min_event_gap_frames
    num_frames = max(num_frames, required)
    cuts = np.sort(rng.integers(0, num_frames - required + 1, size=len(triples)))
    extra_gaps = np.diff(np.concatenate([[0], cuts]))  # slack before each event (in time order)
    starts = np.empty(len(triples), dtype=np.int64)
    position = 0
    for slot, event_index in enumerate(order):
        position += int(extra_gaps[slot])
        starts[event_index] = position
        position += int(lengths[event_index]) + settings.min_event_gap_frames

    # Frames: drifting background + noise + the events' concept signatures.
    frames = _drifting_background(rng, num_frames, settings)
    frames += rng.standard_normal((num_frames, dim)) * (settings.frame_noise / math.sqrt(dim))
    for event_index, triple in enumerate(triples):
        words = vocabulary.triple_words(triple)
        concepts = np.stack([vocabulary.signatures[word] for word in words]) * settings.signature_scale
        concepts += rng.standard_normal((3, dim)) * (settings.signature_jitter / math.sqrt(dim))
        gain = rng.uniform(settings.min_event_gain, settings.max_event_gain)
        start, length = int(starts[event_index]), int(lengths[event_index])
        envelope = _event_envelope(length, settings.onset_frames)
        frames[start : start + length] += (gain * envelope)[:, None] * concepts.sum(axis=0)[None, :]

    # Queries: one per target, numbered in time order.
    target_order = sorted(range(num_targets), key=lambda target: starts[target])
    query_ids = {target: f"{video_id}-q{number}" for number, target in enumerate(target_order)}
    duration = num_frames * settings.seconds_per_frame
    queries = []
    for target in target_order:
        words = vocabulary.triple_words(targets[target])
        text = _query_text(rng, words)
        tokens = query_tokens(text)
        token_features = np.stack([vocabulary.word_vectors[token] for token in tokens])
        token_features += rng.standard_normal(token_features.shape) * (
            settings.text_noise / math.sqrt(settings.text_feature_dim)
        )
        signature = vocabulary.event_signature(words)
        sentence = signature / np.linalg.norm(signature)
        sentence += rng.standard_normal(dim) * (settings.sentence_noise / math.sqrt(dim))
        start, end = int(starts[target]), int(starts[target] + lengths[target])
        queries.append(
            {
                "query_id": query_ids[target],
                "query": text,
                "video_id": video_id,
                "clip_id": video_id,
                "duration": duration,
                "timestamps": [start * settings.seconds_per_frame, end * settings.seconds_per_frame],
                "text_features": token_features.astype(np.float32),
                "sentence_embedding": sentence.astype(np.float32),
            }
        )

    events = []
    for event_index in np.argsort(starts, kind="stable"):
        event_index = int(event_index)
        is_target = event_index < num_targets
        owner = event_index if is_target else distractors[event_index - num_targets][1]
        events.append(
            SyntheticEvent(
                *vocabulary.triple_words(triples[event_index]),
                start_frame=int(starts[event_index]),
                end_frame=int(starts[event_index] + lengths[event_index]),
                role="target" if is_target else "distractor",
                query_id=query_ids[owner],
            )
        )
    return SyntheticVideo(video_id=video_id, features=frames.astype(np.float32), events=events, queries=queries)


# ---- The dataset ----


def _settings_match(path: Path, settings: SyntheticDatasetSettings) -> bool:
    """Whether `path` holds a complete synthetic dataset generated with exactly `settings`."""
    if not (path / MANIFEST_FILENAME).is_file() or (path / INCOMPLETE_MARKER_FILENAME).exists():
        return False
    if not (path / EVENTS_FILENAME).is_file():
        return False
    try:
        manifest = read_manifest(path)
    except ValueError:
        return False
    recorded = manifest.get("metadata", {}).get("generator")
    return recorded == json.loads(json.dumps(settings.to_dict()))


def make_synthetic_dataset(
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_train_videos: int = 100,
    num_validation_videos: int = 16,
    num_test_videos: int = 16,
    video_feature_dim: int = 64,
    text_feature_dim: int = 64,
    overwrite: bool = False,
    reuse: bool = False,
    progress: bool = True,
    **settings_overrides: Any,
) -> Path:
    """Generate the synthetic long-video grounding dataset into `output_dir` (layout of `data_rgnet.py`).

    Args:
        output_dir (`str` or `os.PathLike`): Dataset directory to create.
        seed (`int`, *optional*, defaults to 0): Seed of every random draw; same seed and settings give
            bit-identical features and rows.
        num_train_videos (`int`, *optional*, defaults to 100): Videos of the `train` split.
        num_validation_videos (`int`, *optional*, defaults to 16): Videos of the `validation` split.
        num_test_videos (`int`, *optional*, defaults to 16): Videos of the `test` split.
        video_feature_dim (`int`, *optional*, defaults to 64): Frame feature width `Dv` (= sentence embedding `Dc`).
        text_feature_dim (`int`, *optional*, defaults to 64): Token feature width `Dt`.
        overwrite (`bool`, *optional*, defaults to `False`): Replace an existing RGNet dataset at `output_dir`.
        reuse (`bool`, *optional*, defaults to `False`): If `output_dir` already holds a complete build with exactly
            these settings (the manifest's `metadata["generator"]`), return it without generating anything.
        progress (`bool`, *optional*, defaults to `True`): Show a tqdm progress bar.
        **settings_overrides: Any other `SyntheticDatasetSettings` field (e.g. `min_video_frames=800`).

    Returns:
        `Path`: The dataset directory.

    Raises:
        ValueError: On invalid settings, an unknown override, or a non-empty `output_dir` that is not reused and
            may not be overwritten.
    """
    unknown = set(settings_overrides) - {item.name for item in dataclasses.fields(SyntheticDatasetSettings)}
    if unknown:
        raise ValueError(f"Unknown synthetic dataset setting(s) {sorted(unknown)}.")
    settings = SyntheticDatasetSettings(
        seed=seed,
        num_train_videos=num_train_videos,
        num_validation_videos=num_validation_videos,
        num_test_videos=num_test_videos,
        video_feature_dim=video_feature_dim,
        text_feature_dim=text_feature_dim,
        **settings_overrides,
    )
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"`output_dir` {str(output_dir)!r} exists and is not a directory.")
    if reuse and _settings_match(output_dir, settings):
        logger.info("reusing the synthetic dataset at %s (same generator settings)", output_dir)
        return output_dir
    if reuse and output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} holds no synthetic dataset with these settings; pass overwrite=True "
            "(`--overwrite`) to replace it."
        )

    if overwrite and (output_dir / MANIFEST_FILENAME).is_file():
        try:
            manifest = read_manifest(output_dir)
        except ValueError:
            manifest = {}
        # A build from before manifests listed their extra files holds the events file unlisted: it is replaced too,
        # once the rest of the folder is known to be the dataset (a refused overwrite must leave it whole).
        unlisted_events = manifest.get("metadata", {}).get(
            "events_file"
        ) == EVENTS_FILENAME and EVENTS_FILENAME not in manifest.get("extra_files", [])
        if unlisted_events:
            check_dataset_output_dir(output_dir, overwrite=True, also_dataset_files={EVENTS_FILENAME})
            (output_dir / EVENTS_FILENAME).unlink(missing_ok=True)

    began = time.perf_counter()
    vocabulary = build_vocabulary(settings)
    metadata = {
        "dataset": "synthetic",
        "source": "scripts/make_synthetic_dataset.py",
        "seconds_per_frame": settings.seconds_per_frame,
        "recommended_config": settings.recommended_config(),
        "vocabulary": vocabulary.to_dict(),
        "events_file": EVENTS_FILENAME,
        "generator": settings.to_dict(),
    }
    events_by_video: dict[str, Any] = {}
    jobs = [(split, index) for split, count in settings.videos_per_split().items() for index in range(count)]
    with RGNetDatasetWriter(output_dir, metadata=metadata, overwrite=overwrite) as writer:
        for split, index in tqdm(jobs, desc="synthetic videos", unit="video", disable=not progress):
            video = generate_video(settings, vocabulary, split, index)
            writer.add_video(video.video_id, video.features)
            for row in video.queries:
                writer.add_query(split, row)
            events_by_video[video.video_id] = {
                "split": split,
                "num_frames": int(video.features.shape[0]),
                "events": [dataclasses.asdict(event) for event in video.events],
            }
        # Written before the manifest, so a build that fails anywhere leaves no loadable dataset; the manifest lists
        # it, so that overwriting the dataset replaces it too.
        writer.add_extra_file(EVENTS_FILENAME, json.dumps(events_by_video, indent=1) + "\n")
    logger.info(
        "synthetic dataset %s: %d videos, %d frames, %d queries in %.1f s",
        output_dir,
        len(jobs),
        sum(entry["num_frames"] for entry in events_by_video.values()),
        sum(entry["role"] == "target" for video in events_by_video.values() for entry in video["events"]),
        time.perf_counter() - began,
    )
    return output_dir


def read_synthetic_events(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Events of every video of a synthetic dataset (`synthetic_events.json`).

    Args:
        path (`str` or `os.PathLike`): Dataset directory.

    Returns:
        `dict`: `video_id -> {"split", "num_frames", "events": [SyntheticEvent, ...]}` (events in time order).
    """
    raw = json.loads((Path(path) / EVENTS_FILENAME).read_text())
    return {
        video_id: {**entry, "events": [SyntheticEvent(**event) for event in entry["events"]]}
        for video_id, entry in raw.items()
    }


def load_synthetic_vocabulary(path: str | os.PathLike) -> SyntheticVocabulary:
    """Rebuild the vocabulary (word vectors and signatures) of a synthetic dataset from its recorded settings.

    Args:
        path (`str` or `os.PathLike`): Dataset directory.

    Returns:
        [`SyntheticVocabulary`].

    Raises:
        ValueError: If `path` is not a synthetic dataset.
    """
    generator = read_manifest(path).get("metadata", {}).get("generator")
    if not isinstance(generator, Mapping):
        raise ValueError(f"`path` {str(path)!r} is not a synthetic RGNet dataset (no generator settings).")
    return build_vocabulary(SyntheticDatasetSettings(**generator))


# ---- Command line ----


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    defaults = SyntheticDatasetSettings()
    parser = script_parser(__doc__)
    parser.add_argument("--output", required=True, type=Path, help="Dataset directory to create.")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="Random seed.")
    parser.add_argument("--num-train-videos", type=int, default=defaults.num_train_videos)
    parser.add_argument("--num-validation-videos", type=int, default=defaults.num_validation_videos)
    parser.add_argument("--num-test-videos", type=int, default=defaults.num_test_videos)
    parser.add_argument("--video-feature-dim", type=int, default=defaults.video_feature_dim)
    parser.add_argument("--text-feature-dim", type=int, default=defaults.text_feature_dim)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Any other SyntheticDatasetSettings field (e.g. --set min_video_frames=800). Repeatable, each field "
        "once; the settings above take their own flags.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing RGNet dataset at --output.")
    parser.add_argument(
        "--reuse", action="store_true", help="Keep an existing build at --output made with the same settings."
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")
    return parser


# Settings with a flag of their own in `build_parser` (`--set` may not give them too), with that flag.
FLAG_SETTINGS = {
    name: "--" + name.replace("_", "-")
    for name in (
        "seed",
        "num_train_videos",
        "num_validation_videos",
        "num_test_videos",
        "video_feature_dim",
        "text_feature_dim",
    )
}


def _parse_overrides(
    values: list[str], own_flags: Mapping[str, str] | None = None, option: str = "--set"
) -> dict[str, Any]:
    """`NAME=VALUE` strings (`option`, e.g. `--set`) as `SyntheticDatasetSettings` overrides, each name at most once.

    `own_flags` maps the settings that have a flag of their own to that flag; `option` may not give them.
    """
    types = {item.name: item.type for item in dataclasses.fields(SyntheticDatasetSettings)}
    own_flags = own_flags or {}
    overrides: dict[str, Any] = {}
    given: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or name not in types:
            raise ValueError(
                f"`{option}` expects NAME=VALUE with NAME a SyntheticDatasetSettings field, got {value!r}."
            )
        if name in own_flags:
            raise ValueError(
                f"`{option} {name}` is not accepted: `{name}` has its own flag, use `{own_flags[name]} {text}`."
            )
        if name in given:
            raise ValueError(
                f"`{option} {name}` is given more than once ({given[name]!r} and {text!r}); give it once."
            )
        given[name] = text
        try:
            overrides[name] = int(text) if types[name] == "int" else float(text)
        except ValueError:
            expected = "an integer" if types[name] == "int" else "a number"
            raise ValueError(f"`{option} {name}` expects {expected}, got {text!r}.") from None
    return overrides


def main(argv: list[str] | None = None) -> Path:
    """Run the generator; returns the dataset directory."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.no_progress:  # `datasets` draws its own bars when the query tables are saved
        datasets.disable_progress_bars()
    try:
        overrides = _parse_overrides(args.set, own_flags=FLAG_SETTINGS)
        return make_synthetic_dataset(
            args.output,
            seed=args.seed,
            num_train_videos=args.num_train_videos,
            num_validation_videos=args.num_validation_videos,
            num_test_videos=args.num_test_videos,
            video_feature_dim=args.video_feature_dim,
            text_feature_dim=args.text_feature_dim,
            overwrite=args.overwrite,
            reuse=args.reuse,
            progress=not args.no_progress,
            **overrides,
        )
    except ValueError as error:
        parser.error(str(error))


__all__ = [
    "ACTIONS",
    "ATTRIBUTES",
    "EVENTS_FILENAME",
    "FUNCTION_WORDS",
    "GENERATOR_VERSION",
    "OBJECTS",
    "SPLITS",
    "SyntheticDatasetSettings",
    "SyntheticEvent",
    "SyntheticVideo",
    "SyntheticVocabulary",
    "build_parser",
    "build_vocabulary",
    "encode_query",
    "generate_video",
    "load_synthetic_vocabulary",
    "main",
    "make_synthetic_dataset",
    "query_tokens",
    "read_synthetic_events",
]


if __name__ == "__main__":
    run_script(main)
