"""RGNet end to end on the embedded synthetic long-video dataset: build, train, evaluate, save, reload, ground.

Usage:
    python scripts/quickstart.py [--seed 0] [--output_dir outputs/quickstart]

Steps:

1. Build (or reuse) the synthetic dataset of `scripts/make_synthetic_dataset.py` (long videos of drifting
   background with planted events; compositional text queries; distractor events in other windows).
2. Train a small RGNet (`QUICKSTART_CONFIG`) with `RGNetTrainer` (cross-pair batches with contrastive window
   negatives, the MAD recipe's losses) on the training videos.
3. Evaluate on the held-out test videos with full long-video inference (every window of every video) and the
   `evaluate` metric module, next to a trivial baseline (random window order, random spans inside windows).
   Prints a table, writes `metrics.json`.
4. Save the model and processor, reload them with `AutoModel` / `AutoProcessor` (`trust_remote_code=True`) in a
   fresh process, ground one test query from its raw text, print the top 5 moments beside the ground truth and
   write a timeline plot (`timeline.png`).

Queries go in as raw text: the model carries the dataset's text encoder, a CLIP text tower without transformer
layers whose token embeddings are the dataset's word vectors and whose tokenizer is a word-level tokenizer over the
dataset's vocabulary (its final-LayerNorm token states are the normalised word vectors). It is frozen; everything
else trains. `--max_train_steps` and smaller dataset settings make a shortened run (the test suite uses one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scripts.cli import prepare_output_dir, run_script, script_parser  # noqa: E402

logger = logging.getLogger("quickstart")

# The small model trained here (every field documented in configuration_rgnet.py). Feature widths, window length
# and seconds per frame come from the dataset's `recommended_config`.
QUICKSTART_CONFIG = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "ffn_dim": 128,
    "num_text_to_video_layers": 2,
    "num_encoder_layers": 2,
    "num_decoder_layers": 3,
    "num_moment_queries": 5,
    "input_dropout": 0.1,
    # Above 1: the distractors share words with the query, so telling the right window apart needs a stronger
    # contrastive signal; at 10 (the MAD recipe's weight) span precision suffers on this small model.
    "retrieval_loss_weight": 4.0,
    "top_k_windows": 10,
}
QUICKSTART_TRAINING = {
    "num_train_epochs": 50,
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "lr_drop_epochs": [40],
}
METRICS_SHOWN = ("R@1,IoU=0.3", "R@1,IoU=0.5", "R@5,IoU=0.3", "R@5,IoU=0.5", "mIoU", "WindowR@1")
SPECIAL_TOKENS = ("<pad>", "<sot>", "<eot>", "<unk>")


# ---- The dataset's text encoder ----


def build_text_encoder(vocabulary, max_positions: int = 32):
    """A word-level tokenizer and a layer-free CLIP text tower reproducing the dataset's word vectors.

    Returns:
        `(tokenizer, text_config, token_embeddings)`: a `PreTrainedTokenizerFast`, a `CLIPTextConfig` for
        `RGNetConfig.text_config`, and the `(vocab, Dt)` embedding matrix to load into the tower.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPTextConfig, PreTrainedTokenizerFast

    words = sorted(vocabulary.word_vectors)
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + tuple(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^a-z ]"), "")])
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<sot> $A <eot>", special_tokens=[("<sot>", vocab["<sot>"]), ("<eot>", vocab["<eot>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<sot>",
        eos_token="<eot>",
        unk_token="<unk>",
        model_max_length=max_positions,
    )
    dim = len(next(iter(vocabulary.word_vectors.values())))
    text_config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=dim,
        intermediate_size=dim,
        num_hidden_layers=0,
        num_attention_heads=1,
        max_position_embeddings=max_positions,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<sot>"],
        eos_token_id=vocab["<eot>"],
    )
    embeddings = np.zeros((len(vocab), dim), dtype=np.float32)
    for word in words:
        embeddings[vocab[word]] = vocabulary.word_vectors[word]
    return tokenizer, text_config, torch.from_numpy(embeddings)


def load_text_encoder_weights(model, embeddings: torch.Tensor) -> None:
    """Token embeddings = word vectors, no position embeddings (the config's `freeze_text_encoder` keeps them)."""
    encoder = model.model.text_encoder
    with torch.no_grad():
        encoder.embeddings.token_embedding.weight.copy_(embeddings)
        encoder.embeddings.position_embedding.weight.zero_()


# ---- Baseline ----


def random_baseline(queries, store, processor, seed: int, spans_per_window: int = 5) -> list[dict]:
    """Random window order; in each window, uniformly random spans (center and width within the window)."""
    from processing_rgnet import enumerate_windows

    rng = np.random.default_rng(seed)
    predictions = []
    for query_id, video_id in zip(queries["query_id"], queries["video_id"], strict=True):
        offsets, lengths = enumerate_windows(
            store.num_frames(video_id), processor.max_window_frames, processor.window_stride
        )
        ranking = rng.permutation(len(offsets))
        rows = []
        for window in ranking[: processor.max_predictions // spans_per_window]:
            starts = rng.uniform(0, 1, spans_per_window)
            ends = starts + rng.uniform(0, 1, spans_per_window) * (1 - starts)
            for start, end in zip(starts, ends, strict=True):
                seconds = (offsets[window] + np.array([start, end]) * lengths[window]) * processor.seconds_per_frame
                rows.append([float(seconds[0]), float(seconds[1]), 0.0])
        predictions.append({"query_id": query_id, "predictions": rows, "window_ranking": ranking.tolist()})
    return predictions


# ---- Fresh-process demo ----


def run_demo(model_dir: Path, dataset_dir: Path, query_id: str, output_dir: Path) -> dict:
    """Load with the Auto classes (remote code), ground one test query from raw text, print, plot."""
    from transformers import AutoModel, AutoProcessor

    from data_rgnet import load_rgnet_dataset
    from visualization_rgnet import plot_timeline

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    queries, store = load_rgnet_dataset(dataset_dir)
    table = queries["test"]
    row = table[table["query_id"].index(query_id)]
    frames = store.read_frames(row["video_id"])
    inputs = processor(text=row["query"], video_features=frames)
    with torch.no_grad():  # decode only the windows post-processing keeps
        outputs = model(**inputs, top_k_windows=processor.top_k_windows)
    # The sentence embedding of the matching score lives in the frame-feature space; the dataset stores it.
    (result,) = processor.post_process_video_grounding(
        outputs, inputs.window_metadata, video_features=frames, sentence_embeddings=row["sentence_embedding"]
    )
    start, end = row["timestamps"]
    print(f'\nQuery: "{row["query"]}"  (video {row["video_id"]}, {len(frames) * processor.seconds_per_frame:.0f} s)')
    print(f"Ground truth: {start:8.1f} s - {end:8.1f} s")
    for rank, (span, score) in enumerate(
        zip(result["spans"][:5].tolist(), result["scores"][:5].tolist(), strict=True), start=1
    ):
        print(f"  #{rank}: {span[0]:8.1f} s - {span[1]:8.1f} s   score {score:.3f}")
    plot_timeline(
        result,
        inputs.window_metadata,
        query=row["query"],
        ground_truth=(start, end),
        output_path=output_dir / "timeline.png",
    )
    demo = {
        "query_id": query_id,
        "query": row["query"],
        "ground_truth": [start, end],
        "top5": result["spans"][:5].tolist(),
        "loaded_class": type(model).__module__ + "." + type(model).__name__,
    }
    (output_dir / "demo.json").write_text(json.dumps(demo, indent=2))
    return demo


# ---- Main job ----


def format_table(rows: dict[str, dict[str, float]]) -> str:
    header = f"{'':<22}" + "".join(f"{name:>14}" for name in METRICS_SHOWN)
    lines = [header]
    for label, metrics in rows.items():
        lines.append(f"{label:<22}" + "".join(f"{100 * metrics[name]:>13.1f}%" for name in METRICS_SHOWN))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = script_parser(__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset, the model and training")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "outputs" / "quickstart")
    parser.add_argument("--dataset_dir", type=Path, default=None, help="default: <output_dir>/../synthetic-<seed>")
    parser.add_argument("--num_train_epochs", type=float, default=QUICKSTART_TRAINING["num_train_epochs"])
    parser.add_argument(
        "--max_train_steps", type=int, default=None, help="stop after this many steps (shortened runs; default: none)"
    )
    parser.add_argument(
        "--dataset_setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a SyntheticDatasetSettings field (e.g. num_train_videos=20)",
    )
    parser.add_argument("--demo_query_id", default=None, help=argparse.SUPPRESS)  # the fresh-process step
    parser.add_argument("--model_dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (math.isfinite(args.num_train_epochs) and args.num_train_epochs > 0):
        parser.error(f"--num_train_epochs must be a positive number, got {args.num_train_epochs}")
    if args.max_train_steps is not None and args.max_train_steps < 1:  # the Trainer reads 0 as none, -1 as all
        parser.error(f"--max_train_steps must be >= 1 (or left out to train every epoch), got {args.max_train_steps}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    output_dir = args.output_dir
    dataset_dir = args.dataset_dir or output_dir.parent / f"synthetic-{args.seed}"
    if args.demo_query_id is not None:
        return run_demo(args.model_dir, dataset_dir, args.demo_query_id, output_dir)

    from scripts.make_synthetic_dataset import SyntheticDatasetSettings, _parse_overrides

    # The arguments are checked before anything is created. The dataset's seed is `--seed` (it seeds the model and
    # training too): not a `--dataset_setting`.
    settings = _parse_overrides(args.dataset_setting, own_flags={"seed": "--seed"}, option="--dataset_setting")
    try:
        dataset_settings = SyntheticDatasetSettings(seed=args.seed, **settings)  # values out of range
    except ValueError as error:
        raise ValueError(f"Invalid synthetic dataset setting (`--seed`, `--dataset_setting`): {error}") from None
    for split in ("train", "test"):  # trained on the first, evaluated and demonstrated on the second
        if getattr(dataset_settings, f"num_{split}_videos") < 1:
            raise ValueError(
                f"The quickstart needs {split} videos: `--dataset_setting num_{split}_videos` must be >= 1."
            )
    if dataset_dir.exists() and not dataset_dir.is_dir():
        raise ValueError(f"`--dataset_dir` {str(dataset_dir)!r} exists and is not a folder.")

    from transformers import set_seed

    from configuration_rgnet import RGNetConfig
    from data_rgnet import load_rgnet_dataset
    from modeling_rgnet import RGNetForVideoGrounding
    from processing_rgnet import RGNetProcessor
    from scripts.make_synthetic_dataset import load_synthetic_vocabulary, make_synthetic_dataset
    from training_rgnet import (
        RGNetTrainer,
        RGNetTrainingArguments,
        RGNetTrainingDataset,
        predict_long_videos,
        score_predictions,
    )

    started = time.time()
    prepare_output_dir(output_dir)
    make_synthetic_dataset(dataset_dir, seed=args.seed, reuse=True, **settings)
    queries, store = load_rgnet_dataset(dataset_dir)
    batch_size = QUICKSTART_TRAINING["per_device_train_batch_size"]
    if len(queries["train"]) < batch_size:  # training takes whole batches only
        raise ValueError(
            f"The {len(queries['train'])} training queries are fewer than one batch of {batch_size}: raise "
            "`--dataset_setting num_train_videos`."
        )
    vocabulary = load_synthetic_vocabulary(dataset_dir)
    tokenizer, text_config, embeddings = build_text_encoder(vocabulary)

    set_seed(args.seed)
    config = RGNetConfig(**{**store.metadata["recommended_config"], **QUICKSTART_CONFIG}, text_config=text_config)
    model = RGNetForVideoGrounding(config)
    load_text_encoder_weights(model, embeddings)
    processor = RGNetProcessor.from_config(config, tokenizer=tokenizer)
    # Train from the raw query text through the model's text encoder, exactly as inference will run.
    train_queries = queries["train"].remove_columns("text_features")
    train_dataset = RGNetTrainingDataset(train_queries, store, processor, pair_mode=config.pair_mode, seed=args.seed)
    training_args = RGNetTrainingArguments(
        output_dir=str(output_dir / "trainer"),
        num_train_epochs=args.num_train_epochs,
        max_steps=-1 if args.max_train_steps is None else args.max_train_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=QUICKSTART_TRAINING["learning_rate"],
        lr_drop_epochs=[epoch for epoch in QUICKSTART_TRAINING["lr_drop_epochs"] if epoch < args.num_train_epochs],
        seed=args.seed,
        logging_steps=25,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = RGNetTrainer(
        model=model, args=training_args, train_dataset=train_dataset, feature_store=store, processing_class=processor
    )
    trainer.train()
    trained = time.time()

    test_queries = queries["test"].remove_columns("text_features")
    predictions = predict_long_videos(model, processor, test_queries, store)
    rgnet_metrics = score_predictions(predictions, test_queries, processor, "ego4d")
    baseline_metrics = score_predictions(
        random_baseline(test_queries, store, processor, args.seed), test_queries, processor, "ego4d"
    )
    table = format_table({"RGNet": rgnet_metrics, "random baseline": baseline_metrics})
    print(f"\nTest videos: {len(set(test_queries['video_id']))}, queries: {len(test_queries)}\n{table}\n")

    model_dir = output_dir / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    demo_query = test_queries[0]["query_id"]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--demo_query_id",
            demo_query,
            "--model_dir",
            str(model_dir),
            "--dataset_dir",
            str(dataset_dir),
            "--output_dir",
            str(output_dir),
        ],
        check=True,
        env=env,
        cwd=output_dir,
    )
    results = {
        "seed": args.seed,
        "rgnet": rgnet_metrics,
        "random_baseline": baseline_metrics,
        "config": QUICKSTART_CONFIG,
        "training": {
            **QUICKSTART_TRAINING,
            "num_train_epochs": args.num_train_epochs,
            "steps": trainer.state.global_step,
        },
        "seconds": {"data_and_training": round(trained - started, 1), "total": round(time.time() - started, 1)},
        "model_dir": str(model_dir),
        "timeline_png": str(output_dir / "timeline.png"),
    }
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    print(f"Finished in {results['seconds']['total']:.0f} s; results in {output_dir / 'metrics.json'}")
    return results


if __name__ == "__main__":
    run_script(main, errors=(ValueError, OSError))
