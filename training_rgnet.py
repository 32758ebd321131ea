"""Training and long-video evaluation of RGNet on the `transformers` Trainer (spec §3.4, §6, §7, §8).

* `RGNetTrainingArguments`: `TrainingArguments` with the recipe knobs the Trainer lacks (per-epoch LR drops,
  same-video batches, evaluation chunking) and RGNet's defaults (weight decay 1e-4 on every parameter, gradient
  clipping at 0.1, no column removal, incomplete last batch dropped as the original does).
* `RGNetTrainingDataset`: a query table plus a feature store; each item samples one training window pair for its
  query (spec §6.1), reading only those frames. Draws depend on `(seed, epoch, index)` only, so runs are
  reproducible across worker counts, processes and resumes.
* `SameVideoBatchSampler`: optional batches of queries from one video (the paper's negatives).
* `predict_long_videos`: full long-video inference: every window of each query's video, batched across queries in
  bounded chunks, post-processed by `RGNetProcessor` into ranked moments in seconds; `forward_whole_queries` runs
  the model on a processor batch in passes of whole queries (also used by `scripts/ground_video.py` and the
  benchmarks).
* `RGNetTrainer`: the custom loss over both batch modes with its terms logged, AdamW with per-epoch step LR, and an
  `evaluate` that runs `predict_long_videos` on a query table and scores it with the `evaluate` metric module
  (`metrics/long_video_grounding`); `predict` runs the same inference and returns the ranked moments too.
* `RECIPES`: the published optimisation settings (spec §3.4), used by `scripts/train_rgnet.py`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.optimization import get_scheduler
from transformers.trainer_utils import PredictionOutput, SchedulerType
from transformers.utils import logging

try:
    from .loss_rgnet import RGNetLoss
    from .processing_rgnet import (
        RGNetDataCollator,
        RGNetProcessor,
        _as_float_tensor,
        compute_num_windows,
        copy_to_device,
        count_pairs,
        frame_query_similarities,
        moment_to_frames,
        positive_window_range,
        read_training_example,
        select_pairs,
    )
except ImportError:
    from loss_rgnet import RGNetLoss
    from processing_rgnet import (
        RGNetDataCollator,
        RGNetProcessor,
        _as_float_tensor,
        compute_num_windows,
        copy_to_device,
        count_pairs,
        frame_query_similarities,
        moment_to_frames,
        positive_window_range,
        read_training_example,
        select_pairs,
    )

logger = logging.get_logger(__name__)

METRIC_PATH = Path(__file__).resolve().parent / "metrics" / "long_video_grounding"
REQUIRED_QUERY_COLUMNS = ("query_id", "video_id", "timestamps")


# ---- Recipes (spec §3.4) ----


@dataclass(frozen=True)
class RGNetRecipe:
    """Published optimisation settings of one training stage."""

    preset: str
    learning_rate: float
    num_train_epochs: float
    lr_drop_epochs: tuple[int, ...]
    per_device_train_batch_size: int
    seed: int
    note: str = ""


RECIPES: dict[str, RGNetRecipe] = {
    "mad": RGNetRecipe("mad", 1e-4, 35, (25,), 8, 2020, "4 GPUs in the paper (32 queries per step)"),
    "ego4d_naq_pretrain": RGNetRecipe(
        "ego4d-naq-pretrain",
        2e-4,
        200,
        (120, 170),
        16,
        2018,
        "4 GPUs in the paper; the finetune starts from the epoch-100 weights",
    ),
    "ego4d_finetune": RGNetRecipe("ego4d-nlq-finetune", 1e-5, 150, (120,), 32, 2018, "1 GPU; init from pretraining"),
}


def get_recipe(name: str) -> RGNetRecipe:
    key = name.strip().lower().replace("-", "_")
    if key not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; expected one of {sorted(RECIPES)}.")
    return RECIPES[key]


# ---- Arguments ----


def retain_freed_host_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel (whole process).

    By default glibc maps every allocation above 32 MB separately and unmaps it when freed, so each CPU training
    step faults all its large activations in again; on a 2-core VM that is about a quarter of a MAD step. With
    `M_MMAP_MAX = 0` everything comes from the heap, and `M_TRIM_THRESHOLD` bounds what a free returns to the
    kernel. The price is heap fragmentation (a higher resident set). The same effect from the shell:
    `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824`.

    Returns:
        `bool`: whether it applied (`False` without glibc).
    """
    if not 0 <= trim_threshold_bytes < 2**31:
        raise ValueError(f"`trim_threshold_bytes` must be in [0, 2**31) (a C int), got {trim_threshold_bytes}.")
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    # The trim threshold first: if only it applies, the allocator still maps large blocks as before.
    return bool(mallopt(m_trim_threshold, trim_threshold_bytes)) and bool(mallopt(m_mmap_max, 0))


@dataclass
class RGNetTrainingArguments(TrainingArguments):
    """`TrainingArguments` with RGNet's defaults and recipe knobs.

    Args:
        lr_drop_epochs (`list[int]`, *optional*): epochs after which the learning rate is multiplied by
            `lr_drop_factor`. With `lr_scheduler_type="constant"` (the default here) and no warm-up, the recipes'
            per-epoch step schedule; the drops multiply any other schedule of `lr_scheduler_type` (and
            `warmup_steps`) too, whenever it is a `LambdaLR` (all of transformers' but `reduce_lr_on_plateau`).
        lr_drop_factor (`float`, *optional*, defaults to 0.1): the multiplier of each drop.
        same_video_negatives (`bool`, *optional*, defaults to `False`): build each batch from queries of one video,
            so the cross-pair negatives are windows of the same video (the paper's description; the released
            recipes use random batches).
        eval_pairs_per_batch (`int`, *optional*): (query, window) pairs per forward pass during long-video
            evaluation, rounded down to whole queries (at least one); bounds memory on hour-long videos. Defaults to
            [`default_pairs_per_batch`]: 256 MAD windows of 900 frames on a CPU, 1,296 on a GPU with memory to
            spare, or as many frames of shorter windows. It takes the place of `per_device_eval_batch_size`, which
            evaluation does not read.
        eval_metric_config (`str`, *optional*, defaults to `"auto"`): `"mad"` or `"ego4d"` conventions of the
            metric module; `"auto"` follows the model's `query_normalization`.
        per_process_log (`bool`, *optional*, defaults to `False`): every process appends its logs to
            `output_dir/process_{rank}_log.jsonl` (to compare ranks).
        retain_freed_cpu_memory (`bool`, *optional*, defaults to `False`): make glibc keep freed host memory
            for reuse ([`retain_freed_host_memory`]): on CPU a MAD training step about 25% faster for about 1 GB more
            resident memory. It changes the allocator of the whole process, whatever the device.

    Defaults that differ from `TrainingArguments`: `lr_scheduler_type="constant"` (the drops above), `weight_decay`,
    `max_grad_norm`, `remove_unused_columns`, `dataloader_drop_last`, and with `load_best_model_at_end`,
    `metric_for_best_model="R@1_mean"` (the recipes' model-selection score, spec §8) instead of the loss, which
    long-video evaluation does not compute.
    """

    # The `help` texts are what `scripts/train_rgnet.py --help` shows; the docstring above has the details.
    lr_drop_epochs: list[int] = field(
        default_factory=list, metadata={"help": "epochs after which the learning rate is multiplied by lr_drop_factor"}
    )
    lr_drop_factor: float = field(default=0.1, metadata={"help": "the multiplier of each learning-rate drop"})
    same_video_negatives: bool = field(
        default=False, metadata={"help": "build each batch from one video's queries (same-video negative windows)"}
    )
    eval_pairs_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "(query, window) pairs per forward in long-video evaluation, whole queries; unset: a budget "
            "of 256 windows of 900 frames on a CPU, 1,296 on a GPU with memory to spare"
        },
    )
    eval_metric_config: str = field(
        default="auto",
        metadata={"help": "mad | ego4d metric conventions; auto follows the model's query_normalization"},
    )
    per_process_log: bool = field(
        default=False, metadata={"help": "every process appends its logs to output_dir/process_{rank}_log.jsonl"}
    )
    retain_freed_cpu_memory: bool = field(
        default=False, metadata={"help": "glibc keeps freed memory for reuse: faster CPU steps, about 1 GB more RSS"}
    )
    # RGNet defaults (spec §3.4, §6.5) in place of the Trainer's.
    lr_scheduler_type: SchedulerType | str = field(
        default="constant",
        metadata={
            "help": "transformers' schedule (SchedulerType); the default, constant, with lr_drop_epochs and no "
            "warm-up is the recipes' step schedule, and the drops multiply any other"
        },
    )
    weight_decay: float = 1e-4
    max_grad_norm: float = 0.1
    remove_unused_columns: bool = False
    dataloader_drop_last: bool = True

    def __post_init__(self):
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "R@1_mean"  # evaluation reports no loss (the Trainer's default)
        super().__post_init__()
        if self.eval_pairs_per_batch is not None and self.eval_pairs_per_batch < 1:
            raise ValueError(f"`eval_pairs_per_batch` must be positive, got {self.eval_pairs_per_batch}.")
        if not 0 < self.lr_drop_factor <= 1:
            raise ValueError(f"`lr_drop_factor` must be in (0, 1], got {self.lr_drop_factor}.")
        if self.eval_metric_config not in ("auto", "mad", "ego4d"):
            raise ValueError(
                f"`eval_metric_config` must be 'auto', 'mad' or 'ego4d', got {self.eval_metric_config!r}."
            )


# ---- Data ----


def check_query_table(queries, *, split: str, require_timestamps: bool, needs_text: str | None = None) -> None:
    """Fail early, naming what is missing, when a query table cannot feed training or evaluation.

    Args:
        queries (`datasets.Dataset`): the query table.
        split (`str`): its name, for messages.
        require_timestamps (`bool`): every row needs `[start, end]`.
        needs_text (`str`, *optional*): `"text_features"` (model without a text encoder) or `"query"`.
    """
    columns = set(queries.column_names)
    missing = [column for column in REQUIRED_QUERY_COLUMNS if column not in columns]
    if needs_text is not None and needs_text not in columns:
        missing.append(needs_text)
    if missing:
        hint = ""
        if "text_features" in missing:  # the official Ego4D release and a MAD conversion without --text-features
            hint = (
                " Query token features come from the converters: `prepare_mad.py --text-features` (MAD's CLIP token "
                "file) or `--original-layout --text-lmdb` (the original implementation's text store, MAD or Ego4D); "
                "the official Ego4D release has none. A model with a text encoder (`RGNetConfig.text_config`, as "
                "`scripts/quickstart.py` builds one) reads the `query` column instead."
            )
        raise ValueError(f"The {split!r} query table lacks the column(s) {missing}; it has {sorted(columns)}.{hint}")
    if len(queries) == 0:
        raise ValueError(f"The {split!r} query table is empty.")
    # Results and ground truth are matched by `query_id` (read as text: integer ids work as their strings).
    seen: set[str] = set()
    for query_id in queries["query_id"]:
        key = str(query_id)
        if key in seen:
            raise ValueError(f"The {split!r} query table has `query_id` {key!r} more than once; ids must be unique.")
        seen.add(key)
    if require_timestamps and any(value is None for value in queries["timestamps"]):
        raise ValueError(f"The {split!r} query table has rows without `timestamps`; they cannot be trained on.")


def check_dataset_matches_config(queries, store, config, *, flags: bool = True, init_from: str | None = None) -> None:
    """Fail early, naming the setting to change, when a dataset's features or frame rate do not fit a model config.

    Checks the frame feature width (`video_feature_dim`), the query token feature width of the first rows
    (`text_feature_dim`, when the table has `text_features` and the model has no text encoder), the width of the
    first rows' `sentence_embedding` (it must live in the frame feature space: the matching score of inference
    compares the two) and the seconds per frame recorded in the dataset's manifest (`seconds_per_frame`; a wrong
    one silently misplaces every moment).

    Args:
        queries (`datasets.Dataset`): a query table of the dataset.
        store ([`RGNetFeatureStore`]): its frame-feature store (`metadata` holds the manifest's metadata).
        config ([`RGNetConfig`]): the model's config.
        flags (`bool`): name the fix as a command-line flag (`--video_feature_dim 512`) rather than a config field.
        init_from (`str`, *optional*): the checkpoint the config's feature widths come from (`--init_from`): a
            width mismatch then needs another checkpoint, not a flag.
    """
    problems, fixes = [], {}  # every mismatch at once: one run to find them all
    if "sentence_embedding" in queries.column_names and len(queries):
        rows = queries.select(range(min(len(queries), 32)))["sentence_embedding"]
        width = next((len(embedding) for embedding in rows if embedding is not None), None)
        if width is not None and width != store.feature_dim:
            raise ValueError(
                f"The dataset's `sentence_embedding` column is {width}-d but its frame features are "
                f"{store.feature_dim}-d: the matching score compares the two, so the sentence embeddings must come "
                "from the image encoder's text tower (the frame features' space); rebuild the column with it."
            )
    if store.feature_dim != config.video_feature_dim:
        problems.append(
            f"its frame features are {store.feature_dim}-d but the config expects video_feature_dim="
            f"{config.video_feature_dim}"
        )
        fixes["video_feature_dim"] = store.feature_dim
    if config.text_config is None and "text_features" in queries.column_names and len(queries):
        rows = queries.select(range(min(len(queries), 32)))["text_features"]  # the first query with tokens
        width = next((len(tokens[0]) for tokens in rows if len(tokens)), None)
        if width is not None and width != config.text_feature_dim:
            problems.append(
                f"its query token features are {width}-d but the config expects text_feature_dim="
                f"{config.text_feature_dim}"
            )
            fixes["text_feature_dim"] = width
    recorded = store.metadata.get("seconds_per_frame")
    if recorded is not None and not math.isclose(float(recorded), float(config.seconds_per_frame), rel_tol=1e-6):
        problems.append(
            f"its frames are {recorded} s apart (its manifest) but the config has seconds_per_frame="
            f"{config.seconds_per_frame}, which would misplace every moment"
        )
        fixes["seconds_per_frame"] = recorded
    if problems:
        inherited = sorted(set(fixes) & {"video_feature_dim", "text_feature_dim"})
        if init_from is not None and inherited:  # the checkpoint's widths: a flag cannot change its weights
            fix = (
                f"`--init_from` {init_from} was made for other features ({', '.join(inherited)}): start from a "
                "checkpoint made for these features, or train without `--init_from`"
            )
        elif flags:  # a command line that builds the model: the flags fix it
            fix = "Pass " + " ".join(f"--{name} {value}" for name, value in fixes.items())
        else:  # a built model: its config, or another model
            settings = ", ".join(f"`{name}={value!r}`" for name, value in fixes.items())
            fix = f"Set {settings} in the config, or use a model made for these features"
        raise ValueError(f"The dataset does not fit the model config: {'; '.join(problems)}. {fix}.")


class RGNetTrainingDataset(Dataset):
    """Training samples for RGNet: one query per item, with its sampled positive (and negative) window.

    Item `i` reads query row `i`, draws its windows with `np.random.default_rng([seed, epoch, i])` (spec §6.1) and
    reads only those frames from the feature store. The sample also carries a `noise_seed` for the gate's noise
    (see `RGNetDataCollator`). Call `set_epoch` at each epoch (`RGNetTrainer` does) to draw new windows.

    Args:
        queries (`datasets.Dataset`): query rows with `query_id`, `video_id`, `timestamps` and `text_features` (or
            `query` text when the model has a text encoder).
        feature_store: an `RGNetFeatureStore` (or any object with `num_frames` and `read_frames`).
        processor ([`RGNetProcessor`]): windowing settings.
        pair_mode (`str`): `"cross_pairs"` or `"paired_negative"`; in the latter, queries whose video has no window
            outside the moment are left out (counted and logged).
        seed (`int`, *optional*, defaults to 0): base seed of the draws.
    """

    def __init__(self, queries, feature_store, processor: RGNetProcessor, *, pair_mode: str, seed: int = 0):
        needs_text = "query" if processor.tokenizer is not None else "text_features"  # what the collator reads
        check_query_table(queries, split="train", require_timestamps=True, needs_text=needs_text)
        self.queries = queries.with_format("numpy", columns=None, output_all_columns=True)
        self.feature_store = feature_store
        self.processor = processor
        self.pair_mode = pair_mode
        self.seed = int(seed)
        # The epoch lives in shared memory: DataLoader workers hold copies of the dataset (kept across epochs with
        # `persistent_workers`), and each reads the epoch set in the main process when it draws an item.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.indices = np.arange(len(queries))
        unknown_videos = sorted(set(queries["video_id"]) - set(feature_store.video_ids))
        if unknown_videos:
            raise ValueError(f"Query rows name video(s) missing from the feature store: {unknown_videos[:5]}.")
        if pair_mode == "paired_negative":
            self.indices = self._queries_with_negative_windows(queries)

    def _queries_with_negative_windows(self, queries) -> np.ndarray:
        num_frames = np.array([self.feature_store.num_frames(video) for video in queries["video_id"]])
        moments = moment_to_frames(
            np.asarray(queries["timestamps"], dtype=np.float64), self.processor.seconds_per_frame, num_frames
        )
        first, last = positive_window_range(
            moments.frames, num_frames, self.processor.max_window_frames, self.processor.window_stride
        )
        num_windows = compute_num_windows(num_frames, self.processor.window_stride)
        has_negative = (last - first + 1) < num_windows
        dropped = int((~has_negative).sum())
        if dropped:
            logger.warning(
                "paired_negative training: %d of %d queries have no window outside their moment and are skipped.",
                dropped,
                len(has_negative),
            )
        return np.flatnonzero(has_negative)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def video_of(self, item: int) -> str:
        return self.queries[int(self.indices[item])]["video_id"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        index = int(self.indices[item])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        row = self.queries[index]
        row = {key: (value.tolist() if key == "timestamps" else value) for key, value in row.items()}
        sample = read_training_example(
            row,
            self.feature_store,
            rng,
            max_window_frames=self.processor.max_window_frames,
            window_stride=self.processor.window_stride,
            seconds_per_frame=self.processor.seconds_per_frame,
            read_negative_window=self.pair_mode == "paired_negative",
        )
        sample["noise_seed"] = int(rng.integers(0, 2**62))
        return sample


class SameVideoBatchSampler(Sampler[list[int]]):
    """Batches whose queries share one video, so cross-pair negatives are windows of the same video.

    Videos with fewer than `batch_size` queries are pooled with the next ones (a batch may then span two videos).
    The order is shuffled per epoch from `seed`; the last incomplete batch is dropped.
    """

    def __init__(self, video_ids: Sequence[str], batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
        self.video_ids = np.asarray(video_ids)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        # Read by accelerate's sharding of batches across processes: without it, an epoch whose batches do not
        # divide among the processes is padded with repeated batches (queries trained twice, an extra step).
        self.drop_last = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        videos = np.unique(self.video_ids)
        order = []
        for video in rng.permutation(videos):
            members = np.flatnonzero(self.video_ids == video)
            order.extend(rng.permutation(members).tolist())
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.video_ids) // self.batch_size


# ---- Long-video inference (spec §7) ----


def _text_inputs(rows: Mapping[str, Any], indices: Sequence[int], processor: RGNetProcessor, use_text: bool):
    if use_text:
        return {"text": [str(rows["query"][index]) for index in indices]}
    return {"text_features": [np.array(rows["text_features"][index], dtype=np.float32) for index in indices]}


# `torch.compile` modes the scripts offer (`default`: none given); `reduce-overhead` and `max-autotune` record CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Long-video inference's default forward size in frames: 256 MAD windows of 900 frames (about 2.7 GB of float32
# activations on a CPU with the MAD preset). Memory grows with the frames, so shorter windows get more pairs.
INFERENCE_FRAMES_PER_FORWARD = 256 * 900
# On a CUDA device, where small forwards are bound by launching kernels: at most 16 MAD queries' 81 windows (1,296
# windows of 900 frames; 6.4 ms per query on an H200 with bfloat16 weights against 14.1 with the CPU's budget, at 10.2
# GB peak, 19.8 GB in float32), within half the device's free memory at [`CUDA_INFERENCE_BYTES_PER_FRAME`].
CUDA_INFERENCE_FRAMES_PER_FORWARD = 1296 * 900
# Peak device memory per frame of a float32 inference forward, with margin (measured on the H200: 17 kB for MAD's
# windows, 21 kB for Ego4D's).
CUDA_INFERENCE_BYTES_PER_FRAME = 24_000
# CUDA's fused attention kernels have failed on batches of more than 65,535 (pairs × heads launch grids): windows
# shorter than 18 frames would otherwise get more pairs than that.
CUDA_MAX_PAIRS_PER_FORWARD = 65_535


def default_pairs_per_batch(window_frames: int, device: torch.device | str | None = None) -> int:
    """(query, window) pairs per long-video forward pass by default, at least one: on a CPU (or with no `device`),
    [`INFERENCE_FRAMES_PER_FORWARD`] frames' worth of windows of `window_frames` frames (256 MAD windows, 2,560 Ego4D
    ones); on a CUDA device [`CUDA_INFERENCE_FRAMES_PER_FORWARD`] frames (1,296 MAD windows, 12,960 Ego4D ones), or
    fewer where half the device's free memory holds fewer at [`CUDA_INFERENCE_BYTES_PER_FRAME`], and at most
    [`CUDA_MAX_PAIRS_PER_FORWARD`] pairs. Free memory counts what PyTorch's allocator holds unused (cached blocks of
    earlier work, e.g. training before an evaluation), as a fresh process would have it."""
    if device is None or torch.device(device).type != "cuda":
        return max(1, INFERENCE_FRAMES_PER_FORWARD // window_frames)
    device = torch.device(device)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    free_bytes += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    frames = min(CUDA_INFERENCE_FRAMES_PER_FORWARD, free_bytes // 2 // CUDA_INFERENCE_BYTES_PER_FRAME)
    return max(1, min(CUDA_MAX_PAIRS_PER_FORWARD, frames // window_frames))


def forward_whole_queries(
    model,
    inputs: Mapping[str, torch.Tensor],
    num_windows: int,
    *,
    queries_per_forward: int,
    top_k_windows: int | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The model outputs post-processing reads, for a query-major processor batch, whole queries per forward pass.

    Pairs `q·W … q·W + W − 1` belong to query `q`. Each forward pass holds `queries_per_forward` queries (at least one;
    cut with `select_pairs`, either batch form) and runs on the model's device, so a query's windows are ranked
    together. With `top_k_windows` the model grounds only each query's best windows (its `top_k_windows`) and the
    result carries their `grounding_pair_index` over the batch's pairs. Grad mode and autocast are the caller's.

    Args:
        model ([`RGNetForVideoGrounding`]): the model.
        inputs (`Mapping[str, torch.Tensor]`): a processor batch (`processor(...)`, with or without shared windows).
        num_windows (`int`): `W`, windows per query.
        queries_per_forward (`int`): queries per forward pass.
        top_k_windows (`int`, *optional*): windows grounded per query; `None` grounds every window.
        progress (`bool`, *optional*, defaults to `False`): a progress bar over forward passes (when more than one).

    Returns:
        `dict[str, torch.Tensor]` on the CPU: float32 `logits`, `pred_spans` (`(N, Q, 2)`, or `(G, Q, 2)` with
        `top_k_windows`) and `window_logits` `(N, 1)`, plus `grounding_pair_index` `(G,)` with `top_k_windows`.
    """
    device = next(model.parameters()).device
    num_pairs = count_pairs(inputs)
    pairs_per_forward = max(1, queries_per_forward) * num_windows
    collected: dict[str, list[torch.Tensor]] = defaultdict(list)
    starts = range(0, num_pairs, pairs_per_forward)
    for start in tqdm(starts, desc="grounding", unit="batch", disable=not progress or len(starts) < 2):
        rows = slice(start, min(start + pairs_per_forward, num_pairs))
        chunk = {key: value.to(device) for key, value in select_pairs(inputs, rows).items()}
        if top_k_windows is not None:
            chunk["top_k_windows"] = top_k_windows
            chunk["pair_query_index"] = torch.arange(rows.stop - start, device=device) // num_windows
        outputs = model(**chunk)
        for name in ("logits", "pred_spans", "window_logits"):
            collected[name].append(outputs[name].float().cpu())
        if outputs.grounding_pair_index is not None:
            collected["grounding_pair_index"].append(outputs.grounding_pair_index.cpu() + start)
    return {name: torch.cat(values) for name, values in collected.items()}


class PostProcessingWorker:
    """Runs post-processing calls in submission order, on one worker thread beside the caller or inline.

    On an accelerator the forward pass is queued work and the host waits for it; post-processing one chunk of
    queries on the host while the device computes the next one overlaps the two instead of adding them. At most one
    call is in flight: `submit` first collects the call before (waiting for it if it is not done), so memory stays
    bounded and an error is raised one chunk after it happened, not at the end. Calls run one at a time in order, so
    results are those of the inline run. Use as a context manager.

    Args:
        background (`bool`): use the worker thread; `False` runs each call when submitted.
    """

    def __init__(self, background: bool):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rgnet-post") if background else None
        self._in_flight: tuple[Any, Future] | None = None

    def submit(self, key: Any, function, *args, **kwargs) -> list[tuple[Any, Any]]:
        """Run `function(*args, **kwargs)`; returns the `(key, result)` pairs of the calls finished since the last
        `submit` (this call's own when inline), raising a call's exception."""
        finished = self.finish()
        if self._executor is None:
            return finished + [(key, function(*args, **kwargs))]
        self._in_flight = (key, self._executor.submit(function, *args, **kwargs))
        return finished

    def finish(self) -> list[tuple[Any, Any]]:
        """Wait for the call in flight; its `(key, result)` (or nothing), raising its exception."""
        if self._in_flight is None:
            return []
        (key, future), self._in_flight = self._in_flight, None
        return [(key, future.result())]

    def __enter__(self) -> PostProcessingWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=exc_info[0] is not None)


@torch.no_grad()
def predict_long_videos(
    model,
    processor: RGNetProcessor,
    queries,
    feature_store,
    *,
    pairs_per_batch: int | None = None,
    max_predictions: int | None = None,
    video_ids: Sequence[str] | None = None,
    progress: bool = True,
    ground_all_windows: bool = False,
    overlap_post_processing: bool | None = None,
) -> list[dict[str, Any]]:
    """Ranked moments for every query of a table, from all windows of its video (spec §7).

    Queries are grouped by video; each group is cut into chunks of whole queries whose (query, window) pairs fit one
    forward pass of `pairs_per_batch` pairs (one query per pass when its video has more windows), so memory stays
    bounded on hour-long videos. A video's frames are sent to the model's device once and cut into windows there,
    for all its chunks. The model runs in eval mode on its own device and grounds only each query's
    `processor.top_k_windows` best windows, the ones post-processing keeps (the model's `top_k_windows`).

    Args:
        model ([`RGNetForVideoGrounding`]): the model.
        processor ([`RGNetProcessor`]): windowing and post-processing settings.
        queries (`datasets.Dataset`): rows with `query_id`, `video_id`, `text_features` (or `query` with a text
            encoder) and optionally `sentence_embedding` (without it the matching score is 0 for every span).
        feature_store: frames of each video (`read_frames`, `num_frames`).
        pairs_per_batch (`int`, *optional*): pairs per forward pass (at least one query's windows); defaults to
            [`default_pairs_per_batch`] of the processor's window length on the model's device.
        max_predictions (`int`, *optional*): moments kept per query (the processor's default otherwise).
        video_ids (`Sequence[str]`, *optional*): only these videos (e.g. one process's share).
        progress (`bool`, *optional*, defaults to `True`): show a progress bar over queries (and the video at hand).
        ground_all_windows (`bool`, *optional*, defaults to `False`): run the decoder on every window, not only the
            kept ones (same predictions up to float32 rounding of the window scores; slower).
        overlap_post_processing (`bool`, *optional*): post-process each chunk on a worker thread while the model
            runs the next one ([`PostProcessingWorker`]; the same results). Defaults to on when the model is on an
            accelerator (on the CPU both would compete for the same cores).

    Returns:
        `list[dict]` in table order (restricted to `video_ids`): `query_id`, `video_id`, `predictions` (rows
        `[start, end, proposal, match, fusion]` in seconds), `prediction_sources` (`[window, slot]` of each
        prediction) and `window_ranking` (window indices, best first).
    """
    device = next(model.parameters()).device
    if pairs_per_batch is None:
        pairs_per_batch = default_pairs_per_batch(processor.max_window_frames, device)
    elif isinstance(pairs_per_batch, bool) or not isinstance(pairs_per_batch, int) or pairs_per_batch < 1:
        raise ValueError(f"`pairs_per_batch` must be a positive integer or None, got {pairs_per_batch!r}.")
    use_text = getattr(model.config, "text_config", None) is not None
    check_query_table(
        queries, split="evaluation", require_timestamps=False, needs_text="query" if use_text else "text_features"
    )
    columns = ["query_id", "video_id"] + (["query"] if use_text else ["text_features"])
    has_sentence = "sentence_embedding" in queries.column_names
    if has_sentence:
        columns.append("sentence_embedding")
    else:
        logger.warning("No `sentence_embedding` column: the matching score is 0 and ranking uses proposals only.")
    rows = queries.with_format("numpy").select_columns(columns)[:]
    by_video: dict[str, list[int]] = defaultdict(list)
    for index, video in enumerate(rows["video_id"]):
        by_video[str(video)].append(index)
    selected = list(by_video) if video_ids is None else [video for video in video_ids if video in by_video]
    if overlap_post_processing is None:
        overlap_post_processing = device.type != "cpu"
    results: dict[int, dict[str, Any]] = {}

    def collect(finished: list[tuple[Any, Any]]) -> None:
        for (chunk, video), processed in finished:
            for index, result in zip(chunk, processed, strict=True):
                results[index] = {
                    "query_id": str(rows["query_id"][index]),
                    "video_id": video,
                    "predictions": np.asarray(result["predictions"]).tolist(),
                    "prediction_sources": np.asarray(result["prediction_sources"]).tolist(),
                    "window_ranking": np.asarray(result["window_ranking"]).tolist(),
                }

    # Counted in queries: a MAD movie holds hundreds, minutes of work per video on a CPU.
    total_queries = sum(len(by_video[video]) for video in selected)
    progress_bar = tqdm(total=total_queries, desc="long-video inference", unit="query", disable=not progress)
    with _in_eval_mode(model), PostProcessingWorker(background=overlap_post_processing) as worker, progress_bar:
        for video_number, video in enumerate(selected, start=1):
            progress_bar.set_postfix_str(f"video {video_number}/{len(selected)}", refresh=False)
            frames = feature_store.read_frames(video)
            # The matching score's frame-query product runs where the model is, once per chunk for all its queries.
            # float32 on the device; its values are checked by `cut_windows` next.
            device_frames = _as_float_tensor(frames, "video_features", device=device, check_finite=False)
            # Windows cut on the device once per video (the video crosses once); each chunk's pairs read them
            # (`video_pair_index`).
            video_windows = processor.cut_windows(device_frames, device=device)
            num_windows = video_windows.num_windows
            members = by_video[video]
            queries_per_chunk = max(1, pairs_per_batch // num_windows)
            for start in range(0, len(members), queries_per_chunk):
                chunk = members[start : start + queries_per_chunk]
                inputs = processor(  # each window and each query once: pairs read them by index
                    video_windows=video_windows,
                    share_windows=True,
                    share_queries=True,
                    **_text_inputs(rows, chunk, processor, use_text),
                )
                outputs = forward_whole_queries(  # one forward pass for the chunk
                    model,
                    inputs,
                    num_windows,
                    queries_per_forward=len(chunk),
                    top_k_windows=None if ground_all_windows else processor.top_k_windows,
                )
                if has_sentence:
                    sentences = np.stack(
                        [np.array(rows["sentence_embedding"][index], dtype=np.float32) for index in chunk]
                    )
                else:
                    sentences = np.zeros((len(chunk), frames.shape[1]), dtype=np.float32)
                similarities = frame_query_similarities(device_frames, torch.from_numpy(sentences))
                similarities = copy_to_device(similarities, "cpu")  # (T, queries): 14 MB for 100 MAD queries
                finished = worker.submit(
                    (chunk, video),
                    processor.post_process_video_grounding,
                    outputs,
                    inputs.window_metadata,
                    frame_similarities=similarities,
                    max_predictions=max_predictions,
                )
                collect(finished)
                progress_bar.update(len(chunk))
        collect(worker.finish())
    return [results[index] for index in sorted(results)]


@contextlib.contextmanager
def _in_eval_mode(model):
    """`model` in eval mode inside the block, back in its own mode after it, an error included."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def score_predictions(
    predictions: Sequence[Mapping[str, Any]],
    queries,
    processor: RGNetProcessor,
    metric_config: str,
) -> dict[str, float]:
    """Recall@K at temporal IoU, mIoU (Ego4D conventions) and window recall with the `evaluate` metric module.

    Queries without ground truth are not scored. Adds `R@1_mean`, the recipes' model-selection score (mean R@1
    over the IoU thresholds).
    """
    import evaluate

    timestamps = {str(qid): ts for qid, ts in zip(queries["query_id"], queries["timestamps"], strict=True)}
    scored = [item for item in predictions if timestamps.get(item["query_id"]) is not None]
    if not scored:
        raise ValueError("No evaluated query has `timestamps`: nothing to score.")
    if len(scored) < len(predictions):
        logger.warning(
            "%d of %d evaluated queries have no `timestamps` and are not scored (the metrics cover %d).",
            len(predictions) - len(scored),
            len(predictions),
            len(scored),
        )
    metric = evaluate.load(str(METRIC_PATH), metric_config)
    results = metric.compute(
        predictions=[item["predictions"] for item in scored],
        references=[list(timestamps[item["query_id"]]) for item in scored],
        window_rankings=[item["window_ranking"] for item in scored],
        window_length=processor.max_window_frames,
        window_stride=processor.window_stride,
        seconds_per_frame=processor.seconds_per_frame,
    )
    top1 = [value for key, value in results.items() if key.startswith("R@1,")]
    results["R@1_mean"] = float(np.mean(top1))
    results["num_queries"] = len(scored)
    return results


# ---- Trainer ----


def _with_lr_drops(schedule, steps_per_epoch: int, drop_epochs: Sequence[int], factor: float):
    """`schedule`'s multiplier of step `step` times `factor` for each of `drop_epochs` the step's epoch has reached."""
    drops = sorted(drop_epochs)

    def multiplier(step: int) -> float:
        epoch = step // steps_per_epoch
        return schedule(step) * factor ** sum(epoch >= drop for drop in drops)

    return multiplier


class _EpochCallback(TrainerCallback):
    """Passes the epoch to the training dataset (and batch sampler) so every epoch draws new windows."""

    def __init__(self, trainer: RGNetTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # `state.epoch` is fractional (e.g. 0.75 when resuming mid-epoch); its floor is the epoch being started.
        epoch = math.floor((state.epoch or 0.0) + 1e-6)
        for target in (self.trainer.train_dataset, self.trainer._batch_sampler):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)


class _ProcessLogCallback(TrainerCallback):
    def __init__(self, output_dir: str, process_index: int):
        self.path = Path(output_dir) / f"process_{process_index}_log.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": state.global_step, **(logs or {})}) + "\n")


class RGNetTrainer(Trainer):
    """`Trainer` for RGNet: both batch modes, loss terms in the logs, per-epoch LR drops, long-video evaluation.

    `evaluate` and `predict` take a query table (a `datasets.Dataset` with the columns `REQUIRED_QUERY_COLUMNS`, as
    `load_rgnet_dataset` returns per split), not the training dataset of windows: each runs full long-video
    inference ([`predict_long_videos`]) on every query of the table; `evaluate` returns Recall@K / mIoU / window
    recall, `predict` a `PredictionOutput` with each query's ranked moments, its ground truth and the same metrics.
    The videos are read from `feature_store`.

    Args:
        model ([`RGNetForVideoGrounding`]): the model.
        args ([`RGNetTrainingArguments`]): training arguments.
        train_dataset ([`RGNetTrainingDataset`], *optional*): training samples.
        eval_dataset (`datasets.Dataset`, *optional*): a query table evaluated by full long-video inference.
        feature_store (*optional*): frames of the evaluation and prediction videos (required with `eval_dataset`).
        processing_class ([`RGNetProcessor`]): windowing, collation and post-processing.
        data_collator (*optional*): defaults to `RGNetDataCollator(processor, pair_mode=model.config.pair_mode)`.
        **kwargs: passed to `Trainer`.
    """

    def __init__(
        self,
        model=None,
        args: RGNetTrainingArguments | None = None,
        *,
        train_dataset=None,
        eval_dataset=None,
        feature_store=None,
        processing_class: RGNetProcessor | None = None,
        data_collator=None,
        **kwargs,
    ):
        if not isinstance(processing_class, RGNetProcessor):
            raise ValueError("`processing_class` must be the model's RGNetProcessor.")
        if args is None:  # the Trainer would build plain `TrainingArguments`, without RGNet's defaults and settings
            args = RGNetTrainingArguments()
        if not isinstance(args, RGNetTrainingArguments):
            raise ValueError(
                "`args` must be RGNetTrainingArguments (it carries the LR drops and evaluation settings)."
            )
        if eval_dataset is not None and feature_store is None:
            raise ValueError("`feature_store` is required to evaluate `eval_dataset` on full videos.")
        if isinstance(train_dataset, RGNetTrainingDataset) and train_dataset.pair_mode != model.config.pair_mode:
            raise ValueError(
                f"`train_dataset` samples {train_dataset.pair_mode!r} batches but the model's config says "
                f"pair_mode={model.config.pair_mode!r}."
            )
        if data_collator is None:
            data_collator = RGNetDataCollator(processing_class, pair_mode=model.config.pair_mode)
        if args.ddp_find_unused_parameters is None:
            # A head that no loss term reaches (e.g. the retrieval head in Ego4D finetuning, whose weight is 0) gets
            # no gradient, which DDP must be told about. Decided from the config's weights as the trainer is built.
            args.ddp_find_unused_parameters = bool(RGNetLoss.heads_without_gradient(model.config))
        self.feature_store = feature_store
        self.processor = processing_class
        self._batch_sampler = None
        self._loss_term_sums: dict[str, float] = defaultdict(float)
        self._loss_term_count = 0
        # A feature-only processor (no tokenizer) is kept out of the Trainer's tokenizer handling (special-token
        # alignment needs a tokenizer) and saved with every checkpoint by `_save`.
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class if processing_class.tokenizer is not None else None,
            data_collator=data_collator,
            **kwargs,
        )
        self.add_callback(_EpochCallback(self))
        if self.args.per_process_log:
            self.add_callback(_ProcessLogCallback(self.args.output_dir, self.args.process_index))
        if self.args.retain_freed_cpu_memory and not retain_freed_host_memory():
            logger.warning("`retain_freed_cpu_memory` needs glibc's `mallopt`; this process keeps its allocator.")

    # -- training --

    def get_train_dataloader(self) -> DataLoader:
        batch = self.args.per_device_train_batch_size * self.args.world_size
        sized = isinstance(self.train_dataset, Sized)  # an iterable dataset has no length to check
        if self.args.dataloader_drop_last and sized and len(self.train_dataset) < batch:
            # Every batch is whole (cross pairs need B queries): none would be left, and the Trainer's own error
            # would speak of max_steps.
            raise ValueError(
                f"The training set has {len(self.train_dataset)} queries, fewer than one batch of "
                f"per_device_train_batch_size ({self.args.per_device_train_batch_size}) x {self.args.world_size} "
                "process(es); lower --per_device_train_batch_size."
            )
        if not self.args.same_video_negatives:
            return super().get_train_dataloader()
        if not isinstance(self.train_dataset, RGNetTrainingDataset):
            raise ValueError("`same_video_negatives` needs an RGNetTrainingDataset.")
        videos = [self.train_dataset.video_of(item) for item in range(len(self.train_dataset))]
        self._batch_sampler = SameVideoBatchSampler(
            videos, self.args.per_device_train_batch_size, seed=self.args.data_seed or self.args.seed
        )
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self._batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """`6 × parameters × (pair, frame) positions` of a batch: the base class counts the elements of
        `video_features`, which holds each window once in cross-pair batches (and counts feature channels)."""
        if "video_mask" not in inputs:
            return super().floating_point_ops(inputs)
        positions = count_pairs(inputs) * inputs["video_mask"].shape[-1]
        return 6 * positions * self.model.num_parameters(exclude_embeddings=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise ValueError("Training batches need `labels` (use RGNetDataCollator).")
        outputs = model(**inputs)
        if model.training:
            for name, value in outputs.loss_dict.items():
                self._loss_term_sums[name] += float(value.detach())
            self._loss_term_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._loss_term_count and "loss" in logs:
            # Averaged over every process's micro-batches since the last log, as `loss` is: each process holds its
            # own. Every process logs the training loss at the same step (the Trainer gathers `loss` there too), and
            # the config fixes the terms, so each process sends the same names.
            names = sorted(self._loss_term_sums)
            totals = torch.tensor(
                [*(self._loss_term_sums[name] for name in names), self._loss_term_count],
                dtype=torch.float64,
                device=self.args.device,
            )
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            totals = totals.tolist()
            for name, total in zip(names, totals[:-1], strict=True):
                logs[name] = round(total / totals[-1], 6)
            self._loss_term_sums.clear()
            self._loss_term_count = 0
        super().log(logs, start_time)

    def get_decay_parameter_names(self, model) -> list[str]:
        # The recipes apply weight decay to every parameter, biases and LayerNorms included (spec §3.4).
        return [name for name, _ in model.named_parameters()]

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """`lr_scheduler_type`'s schedule with `warmup_steps` (`"constant"` with warm-up is `"constant_with_warmup"`,
        where transformers would ignore the warm-up), times `lr_drop_factor` from each of `lr_drop_epochs` on."""
        if self.lr_scheduler is None:
            optimizer = self.optimizer if optimizer is None else optimizer
            kind = SchedulerType(self.args.lr_scheduler_type)
            warmup_steps = self.args.get_warmup_steps(num_training_steps)
            if kind == SchedulerType.CONSTANT and warmup_steps > 0:
                kind = SchedulerType.CONSTANT_WITH_WARMUP
            scheduler = get_scheduler(
                kind,
                optimizer=optimizer,
                num_warmup_steps=warmup_steps,
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            if self.args.lr_drop_epochs:
                if type(scheduler) is not torch.optim.lr_scheduler.LambdaLR:
                    raise ValueError(
                        f"`lr_drop_epochs` {self.args.lr_drop_epochs} multiply a step-wise schedule, which "
                        f"`lr_scheduler_type={kind.value!r}` is not: drop one of the two."
                    )
                # Optimizer steps per epoch, counted as the Trainer counts them (a last partial accumulation is one).
                steps_per_epoch = max(
                    1, math.ceil(len(self.get_train_dataloader()) / self.args.gradient_accumulation_steps)
                )
                scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer,
                    [
                        _with_lr_drops(schedule, steps_per_epoch, self.args.lr_drop_epochs, self.args.lr_drop_factor)
                        for schedule in scheduler.lr_lambdas
                    ],
                )
            self.lr_scheduler = scheduler
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        if self.processing_class is None and self.args.should_save:
            self.processor.save_pretrained(output_dir if output_dir is not None else self.args.output_dir)

    # -- evaluation --

    def metric_config(self) -> str:
        if self.args.eval_metric_config != "auto":
            return self.args.eval_metric_config
        return "mad" if self.model.config.query_normalization == "mad" else "ego4d"

    def _check_query_table_argument(self, dataset, argument: str) -> None:
        """Fail clearly when `dataset` is not one query table (e.g. the training dataset of windows)."""
        if isinstance(dataset, Mapping):
            raise ValueError(f"Pass one query table as `{argument}`, not a dict of them.")
        columns = getattr(dataset, "column_names", None) or []
        missing = [column for column in REQUIRED_QUERY_COLUMNS if column not in columns]
        if missing:
            raise ValueError(
                f"`{argument}` must be a query table (a `datasets.Dataset` with the columns "
                f"{list(REQUIRED_QUERY_COLUMNS)}, e.g. a split of `load_rgnet_dataset`); the "
                f"{type(dataset).__name__} given lacks {missing}. The training dataset of windows "
                "(`RGNetTrainingDataset`, `trainer.train_dataset`) is not a query table: pass its `queries` instead."
            )
        if self.feature_store is None:
            raise ValueError(f"`{argument}` needs the trainer's `feature_store` (the frames of its videos).")

    def _long_video_inference(
        self, queries, argument: str, metric_key_prefix: str, *, require_timestamps: bool
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """`evaluate` and `predict`: full long-video inference on a query table, split over the processes, and its
        scores (when some query has `timestamps`).

        Returns:
            `(predictions, metrics)`: `predict_long_videos`'s list in table order (all processes' queries) and the
            metrics prefixed with `metric_key_prefix`, `_runtime` included.
        """
        self._check_query_table_argument(queries, argument)
        has_timestamps = any(value is not None for value in queries["timestamps"])
        if require_timestamps and not has_timestamps:
            raise ValueError(f"No query of `{argument}` has `timestamps`: nothing to score (`predict` needs none).")
        start = time.time()
        model = self.accelerator.unwrap_model(self.model)
        videos = sorted(set(queries["video_id"]))
        share = videos[self.args.process_index :: self.args.world_size]
        predictions = predict_long_videos(
            model,
            self.processor,
            queries,
            self.feature_store,
            pairs_per_batch=self.args.eval_pairs_per_batch,
            video_ids=share,
            progress=self.is_local_process_zero() and not self.args.disable_tqdm,
        )
        if self.args.world_size > 1:
            from accelerate.utils import gather_object

            predictions = gather_object(predictions)
        order = {
            str(qid): index for index, qid in enumerate(queries["query_id"])
        }  # as `predict_long_videos` writes them
        predictions = sorted(predictions, key=lambda item: order[item["query_id"]])
        metrics = {}
        if has_timestamps:
            scores = score_predictions(predictions, queries, self.processor, self.metric_config())
            metrics = {f"{metric_key_prefix}_{key}": value for key, value in scores.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        self.last_predictions = predictions
        return predictions, metrics

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Full long-video inference on `eval_dataset` (a query table) and Recall@K / mIoU / window recall.

        `ignore_keys` is unused (no model outputs are gathered). The per-query results are kept in
        `self.last_predictions` (`predict_long_videos`'s list, in table order).
        """
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if eval_dataset is None:
            raise ValueError("`evaluate` needs an `eval_dataset` (a query table with timestamps).")
        _, metrics = self._long_video_inference(
            eval_dataset, "eval_dataset", metric_key_prefix, require_timestamps=True
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Full long-video inference on `test_dataset` (a query table), as `evaluate` runs it.

        Args:
            test_dataset (`datasets.Dataset`): a query table (`query_id`, `video_id`, `timestamps` and the text
                column); rows may have `timestamps` `None` (no ground truth).
            ignore_keys (`list[str]`, *optional*): unused (no model outputs are gathered).
            metric_key_prefix (`str`, *optional*, defaults to `"test"`): prefix of the metric names.

        Returns:
            `PredictionOutput`:
            - `predictions` (`list[np.ndarray]`): per query in table order, its ranked moments as a float64 array
              `(P, 5)` of rows `[start, end, proposal, match, fusion]` (seconds, then scores; best first). The window
              ranking and each moment's source window are in `self.last_predictions` (`predict_long_videos`'s list).
            - `label_ids` (`np.ndarray` or `None`): float64 `(N, 2)` ground-truth `[start, end]` in seconds per
              query (NaN for a query without `timestamps`), or `None` when no query has them.
            - `metrics` (`dict[str, float]`): `evaluate`'s metrics under `metric_key_prefix` (scored over the
              queries with `timestamps`; only `{prefix}_runtime` when none has them).
        """
        predictions, metrics = self._long_video_inference(
            test_dataset, "test_dataset", metric_key_prefix, require_timestamps=False
        )
        timestamps = list(test_dataset["timestamps"])
        label_ids = None
        if any(value is not None for value in timestamps):
            label_ids = np.array(
                [[math.nan, math.nan] if value is None else list(value) for value in timestamps], dtype=np.float64
            )
        moments = [np.asarray(item["predictions"], dtype=np.float64).reshape(-1, 5) for item in predictions]
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        return PredictionOutput(predictions=moments, label_ids=label_ids, metrics=metrics)


__all__ = [
    "COMPILE_MODES",
    "CUDA_INFERENCE_BYTES_PER_FRAME",
    "CUDA_INFERENCE_FRAMES_PER_FORWARD",
    "CUDA_MAX_PAIRS_PER_FORWARD",
    "INFERENCE_FRAMES_PER_FORWARD",
    "PostProcessingWorker",
    "RECIPES",
    "RGNetRecipe",
    "RGNetTrainer",
    "RGNetTrainingArguments",
    "RGNetTrainingDataset",
    "SameVideoBatchSampler",
    "check_dataset_matches_config",
    "check_query_table",
    "default_pairs_per_batch",
    "forward_whole_queries",
    "get_recipe",
    "predict_long_videos",
    "retain_freed_host_memory",
    "score_predictions",
]
