"""Train RGNet on a dataset in the project's layout with one of the published recipes.

Usage:
    python scripts/train_rgnet.py --recipe mad --dataset_dir data/mad --output_dir runs/rgnet-mad
    accelerate launch --multi_gpu --num_processes 4 scripts/train_rgnet.py --recipe mad ...
    python scripts/train_rgnet.py --recipe ego4d_finetune --init_from runs/naq-pretrain/checkpoint-XXXX ...

`--recipe` (mad | ego4d_naq_pretrain | ego4d_finetune) sets the model preset and the optimisation settings of spec
§3.4 (learning rate, epochs, LR drops, batch size per device, seed). Every `TrainingArguments` /
`RGNetTrainingArguments` flag overrides the recipe, and every `RGNetConfig` field can be overridden too, e.g.
`--hidden_size 128 --max_window_frames 64 --use_auxiliary_loss false` (values parsed by the field's type).
`--init_from` starts from a saved model with its architecture (layer counts and widths, feature widths, text encoder;
a flag asking for another is an error), its selector attention mode, and the recipe's other settings. An output
directory holding an earlier run is refused unless it is resumed (`--resume_from_checkpoint last` or a checkpoint
folder) or `--overwrite_output_dir true` is given. All errors about the data, the recipe, the output directory,
`--init_from` or the resumed checkpoint are raised before training starts, and so are `TrainingArguments` flags
the script does not use (`--per_device_eval_batch_size`: use `--eval_pairs_per_batch`; `--do_predict`: use
`evaluate_rgnet.py`; `--do_eval` without `--eval_split`). At the end the training metrics, and
with `--eval_split` the evaluation's (Recall@K at IoU, mIoU, window recall), are printed and written to
`train_results.json` in the output directory (`--output_dir`, by default `runs/rgnet-<recipe>`) beside the model and
its processor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from argparse import ArgumentTypeError
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from huggingface_hub.errors import StrictDataclassError  # noqa: E402
from transformers import HfArgumentParser, set_seed  # noqa: E402
from transformers.hf_argparser import string_to_bool  # noqa: E402

from configuration_rgnet import RGNetConfig  # noqa: E402
from data_rgnet import load_rgnet_dataset  # noqa: E402
from modeling_rgnet import RGNetForVideoGrounding  # noqa: E402
from processing_rgnet import RGNetProcessor  # noqa: E402
from scripts.cli import run_script  # noqa: E402
from training_rgnet import (  # noqa: E402
    RGNetTrainer,
    RGNetTrainingArguments,
    RGNetTrainingDataset,
    check_dataset_matches_config,
    check_query_table,
    get_recipe,
)

logger = logging.getLogger("train_rgnet")

# Fields that define the architecture: `--init_from` takes them from its checkpoint (flags that disagree are errors).
ARCHITECTURE_FIELDS = (
    "video_feature_dim",
    "text_feature_dim",
    "hidden_size",
    "num_attention_heads",
    "num_text_to_video_layers",
    "num_encoder_layers",
    "num_decoder_layers",
    "ffn_dim",
    "num_moment_queries",
)
# Fields without weights of their own that change the function a checkpoint's weights compute: `--init_from` takes
# them from its checkpoint unless given.
FUNCTION_FIELDS = ("selector_attention_mode", "emulate_text_mask_head_ordering")


@dataclass
class RGNetScriptArguments:
    """What to train on and from where."""

    dataset_dir: str = field(metadata={"help": "dataset folder in the project's layout (see data_rgnet.py)"})
    recipe: str = field(default="mad", metadata={"help": "mad | ego4d_naq_pretrain | ego4d_finetune"})
    train_split: str = field(default="train", metadata={"help": "query table trained on"})
    eval_split: str | None = field(default=None, metadata={"help": "query table evaluated on full videos"})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "a save_pretrained folder (e.g. a pretraining checkpoint) to start from, with its architecture"
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "train into an --output_dir that holds an earlier run: its model files are replaced, its "
            "checkpoint-* folders are deleted when training starts (otherwise such a folder is an error)"
        },
    )


def _annotation_kinds(annotation) -> set[str]:
    """The type names of a field annotation (`int`, `"float | int"`, `int | None`, ...)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return {part.strip() for part in text.split("|")}


def _parse_config_value(flag: str, annotation, raw: str):
    """A command-line value for an `RGNetConfig` field, parsed by the field's type."""
    kinds = _annotation_kinds(annotation)
    if "None" in kinds and raw.lower() in ("none", "null"):
        return None
    try:
        if "bool" in kinds:
            return string_to_bool(raw)
        if "int" in kinds and "float" not in kinds:
            return int(raw)
        if "float" in kinds:
            try:
                return int(raw)  # `0` stays an int where the field takes both
            except ValueError:
                return float(raw)
        if "str" in kinds:
            return json.loads(raw) if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
        return json.loads(raw)
    except (ArgumentTypeError, ValueError):  # json.JSONDecodeError is a ValueError
        pass
    if "bool" in kinds:
        expected = "a boolean (true/false, yes/no, 1/0, any case)"
    elif "int" in kinds and "float" not in kinds:
        expected = "an integer"
    elif "float" in kinds:
        expected = "a number"
    else:
        expected = "a JSON value"
    if "None" in kinds:
        expected += " or none"
    raise ValueError(f"`{flag}` expects {expected}, got {raw!r}.")


def _parse_config_overrides(remaining: list[str]) -> dict:
    """`--field value` (or `--field=value`) pairs for `RGNetConfig` fields, parsed by the field's type (the last of
    a repeated flag wins, as for the other flags)."""
    # RGNetConfig's own fields: the generic `PreTrainedConfig` ones (`dtype`, `return_dict`, ...) are not the
    # model's settings (a saved `dtype` does not make training run in it; `return_dict false` breaks the Trainer).
    own_fields = set(RGNetConfig.__annotations__)
    fields = {item.name: item for item in dataclasses.fields(RGNetConfig) if item.name in own_fields}
    overrides, index = {}, 0
    while index < len(remaining):
        flag = remaining[index]
        flag, separator, raw = flag.partition("=") if flag.startswith("--") else (flag, "", "")
        name = flag[2:].replace("-", "_") if flag.startswith("--") else None  # either spelling, as every flag
        if name is None or name not in fields:
            raise ValueError(f"Unknown argument {flag!r}: not a training argument nor an RGNetConfig field.")
        if not separator:
            if index + 1 >= len(remaining) or remaining[index + 1].startswith("--"):
                raise ValueError(f"`{flag}` (an RGNetConfig field) needs a value, e.g. `{flag} VALUE`.")
            raw = remaining[index + 1]
            index += 1
        overrides[name] = _parse_config_value(flag, fields[name].type, raw)
        index += 1
    return overrides


def build_config(script_args: RGNetScriptArguments, overrides: dict) -> RGNetConfig:
    """The recipe's config with the command line's field overrides; with `--init_from`, the checkpoint's architecture
    (its [`ARCHITECTURE_FIELDS`], sentence-embedding width and text encoder) and its [`FUNCTION_FIELDS`] in place of
    the recipe's."""
    recipe = get_recipe(script_args.recipe)
    if script_args.init_from is None:
        return RGNetConfig.from_preset(recipe.preset, **overrides)
    init_dir = Path(script_args.init_from)
    if not (init_dir / "config.json").is_file():
        raise ValueError(f"`--init_from` {init_dir} holds no config.json (a save_pretrained folder is needed).")
    pretrained = RGNetConfig.from_pretrained(init_dir)
    if "text_config" in overrides:
        encoder = "none" if pretrained.text_config is None else pretrained.text_config.model_type
        raise ValueError(
            f"`--text_config` cannot be combined with `--init_from` {init_dir}: the checkpoint's text encoder "
            f"({encoder}) and its weights are used."
        )
    conflicting = {
        name: (getattr(pretrained, name), overrides[name])
        for name in ARCHITECTURE_FIELDS
        if name in overrides and overrides[name] != getattr(pretrained, name)
    }
    if conflicting:
        flags = " ".join(f"--{name} {value}" for name, (_, value) in conflicting.items())
        raise ValueError(
            f"`--init_from` {init_dir} has another architecture than the command line asks for (checkpoint, flag): "
            f"{conflicting}; drop {flags} (the checkpoint's architecture is used) or start from another checkpoint."
        )
    # Also what the weights were trained to compute without holding weights of its own (the flags may change those).
    inherited = {
        name: getattr(pretrained, name)
        for name in (*ARCHITECTURE_FIELDS, "pooled_text_dim", "text_config", *FUNCTION_FIELDS)
    }
    return RGNetConfig.from_preset(recipe.preset, **{**inherited, **overrides})


def parse_arguments(argv: list[str]) -> tuple[RGNetScriptArguments, RGNetTrainingArguments, list[str]]:
    """The script's arguments, its training arguments with the recipe's defaults (explicit flags win; the output
    directory defaults to `runs/rgnet-<recipe>`), and the remaining strings (`RGNetConfig` overrides)."""
    # The recipe sets the defaults of the training arguments; explicit flags still win.
    pre_parser = argparse.ArgumentParser(add_help=False)  # the recipe alone; `--help` is the full parser's
    pre_parser.add_argument("--recipe", default=RGNetScriptArguments.recipe)
    pre_args, _ = pre_parser.parse_known_args(argv)
    recipe = get_recipe(pre_args.recipe)
    parser = HfArgumentParser(
        (RGNetScriptArguments, RGNetTrainingArguments),
        description=__doc__.split("\n\n")[0],
        epilog="Every RGNetConfig field is a flag too, e.g. --hidden_size 128 --max_window_frames 64 "
        "(configuration_rgnet.py lists them); the recipe sets the rest.",
    )
    parser.set_defaults(
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        lr_drop_epochs=list(recipe.lr_drop_epochs),
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        seed=recipe.seed,
        output_dir=str(Path("runs", f"rgnet-{pre_args.recipe}")),  # not transformers' generic `trainer_output`
    )
    return parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)


def check_unused_training_arguments(script_args: RGNetScriptArguments, training_args: RGNetTrainingArguments) -> None:
    """Refuse `TrainingArguments` flags that this script would otherwise accept and ignore.

    Evaluation here is long-video inference over whole videos, sized in (query, window) pairs, not batches of
    evaluation samples; it runs when `--eval_split` is given, and prediction on a test split is
    `scripts/evaluate_rgnet.py`'s job. A flag asking for something else must not pass as if it had been honoured.
    """
    default_eval_batch = next(
        item.default
        for item in dataclasses.fields(RGNetTrainingArguments)
        if item.name == "per_device_eval_batch_size"
    )
    if training_args.per_device_eval_batch_size != default_eval_batch:
        raise ValueError(
            f"`--per_device_eval_batch_size {training_args.per_device_eval_batch_size}` is not used: long-video "
            "evaluation runs whole queries' windows per forward; size it with `--eval_pairs_per_batch` ((query, "
            "window) pairs per forward)."
        )
    if training_args.do_predict:
        raise ValueError(
            "`--do_predict` is not used by this script: predict on a split with `scripts/evaluate_rgnet.py --model "
            "OUTPUT_DIR --dataset_dir DATA --split SPLIT` after training."
        )
    if training_args.do_eval and script_args.eval_split is None:
        raise ValueError(
            "`--do_eval` needs `--eval_split` (the split to evaluate); the final weights are then "
            "evaluated at the end of training."
        )


def last_evaluation_of_final_weights(trainer: RGNetTrainer) -> dict | None:
    """The metrics of an evaluation run during training on the weights training ended with (`--eval_strategy` at
    the last step, and no other checkpoint loaded at the end), or `None`: a long-video evaluation is not repeated."""
    state = trainer.state
    evaluation = next(
        (
            entry
            for entry in reversed(state.log_history)
            if "eval_runtime" in entry and entry.get("step") == state.global_step
        ),
        None,
    )
    if evaluation is None:
        return None
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint is not None:
        if Path(state.best_model_checkpoint).name != f"checkpoint-{state.global_step}":
            return None  # the best checkpoint's weights were loaded: they were evaluated at another step
    return {key: value for key, value in evaluation.items() if key.startswith("eval_")}


RESUME_LAST = ("true", "last")  # `--resume_from_checkpoint` values meaning the output folder's last checkpoint


def resolve_output_dir(
    script_args: RGNetScriptArguments, training_args: RGNetTrainingArguments
) -> tuple[str | None, list[Path]]:
    """Check `--output_dir` before anything loads, and give the checkpoint to resume from.

    A folder that holds an earlier run (its `checkpoint-*` folders or a saved model) is refused unless the run is
    resumed (`--resume_from_checkpoint PATH`, or `last`/`true` for its last checkpoint) or `--overwrite_output_dir`
    is given; then its checkpoints are to be deleted once every other check has passed, so that they neither mix
    with the new run's nor are rotated away by `--save_total_limit` as if they were its own.

    Returns:
        `(checkpoint, earlier_checkpoints)`: the checkpoint folder to resume from (or `None`) and the earlier run's
        checkpoint folders to delete.
    """
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"`--output_dir` {output_dir} exists and is not a directory.")
    resume = training_args.resume_from_checkpoint
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume is not None and str(resume).lower() in RESUME_LAST:
        if last is None:
            raise ValueError(
                f"`--resume_from_checkpoint {resume}`: `--output_dir` {output_dir} holds no checkpoint-* folder."
            )
        return last, []
    if resume is not None:
        if not Path(resume).is_dir():
            raise ValueError(f"`--resume_from_checkpoint` {resume} is not a checkpoint folder.")
        return str(resume), []
    earlier = [
        name for name in ("config.json", "model.safetensors", "train_results.json") if (output_dir / name).exists()
    ]
    checkpoints = sorted(path.name for path in output_dir.glob("checkpoint-*")) if output_dir.is_dir() else []
    if (earlier or checkpoints) and not script_args.overwrite_output_dir:
        raise ValueError(
            f"`--output_dir` {output_dir} holds an earlier run ({', '.join(checkpoints + earlier)}): pass "
            "`--resume_from_checkpoint last` to continue it, `--overwrite_output_dir true` to train over it (its "
            "checkpoints are deleted), or another `--output_dir`."
        )
    return None, [output_dir / name for name in checkpoints]


def check_resumed_config(checkpoint: str, config: RGNetConfig) -> None:
    """A checkpoint whose architecture differs from the command line's fails in `load_state_dict` with a list of
    size mismatches, inside training: say which flags differ, before anything trains."""
    saved_file = Path(checkpoint, "config.json")
    if not saved_file.is_file():
        raise ValueError(f"`--resume_from_checkpoint` {checkpoint} holds no config.json (not a training checkpoint).")
    saved = RGNetConfig.from_pretrained(checkpoint)
    different = {
        name: (getattr(saved, name), getattr(config, name))
        for name in ARCHITECTURE_FIELDS
        if getattr(saved, name) != getattr(config, name)
    }
    if different:
        raise ValueError(
            f"`--resume_from_checkpoint` {checkpoint} was trained with another architecture than the command line "
            f"builds (checkpoint, command line): {different}; resume with the flags of that run."
        )


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    script_args, training_args, remaining = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = build_config(script_args, _parse_config_overrides(remaining))
    resume_from_checkpoint, earlier_checkpoints = resolve_output_dir(script_args, training_args)
    if resume_from_checkpoint is not None:
        check_resumed_config(resume_from_checkpoint, config)

    queries, store = load_rgnet_dataset(script_args.dataset_dir)
    for split in filter(None, (script_args.train_split, script_args.eval_split)):
        if split not in queries:
            raise ValueError(f"`--dataset_dir` has no split {split!r}; it has {sorted(queries)}.")
    text_column = "query" if config.text_config is not None else "text_features"
    check_query_table(
        queries[script_args.train_split],
        split=script_args.train_split,
        require_timestamps=True,
        needs_text=text_column,
    )
    check_dataset_matches_config(queries[script_args.train_split], store, config, init_from=script_args.init_from)
    eval_dataset = None
    eval_strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
    if script_args.eval_split is None and eval_strategy != "no":
        raise ValueError(f"`--eval_strategy {eval_strategy}` needs `--eval_split` (the split to evaluate).")
    check_unused_training_arguments(script_args, training_args)
    if script_args.eval_split is not None:
        eval_dataset = queries[script_args.eval_split]
        check_query_table(eval_dataset, split=script_args.eval_split, require_timestamps=True, needs_text=text_column)
        check_dataset_matches_config(eval_dataset, store, config, init_from=script_args.init_from)
        if "sentence_embedding" not in eval_dataset.column_names:  # said now, not after hours of training
            logger.warning(
                "The %r split has no `sentence_embedding` column: evaluation ranks moments by their proposal scores "
                "alone (the matching score with the query's sentence embedding is 0).",
                script_args.eval_split,
            )

    # A model with a text encoder reads the `query` column through the tokenizer saved with it.
    tokenizer = None
    if script_args.init_from is not None:
        tokenizer = RGNetProcessor.from_model_folder(script_args.init_from, config).tokenizer
    if config.text_config is not None and tokenizer is None:
        source = (
            f"`--init_from` {script_args.init_from} holds none" if script_args.init_from else "`--text_config` alone"
        )
        raise ValueError(
            "The model has a text encoder (`text_config`), which reads the `query` column through a tokenizer, but "
            f"there is no tokenizer ({source}): start from a model folder saved with its processor "
            "(`processor.save_pretrained(folder)`, as `scripts/quickstart.py` does) via `--init_from`."
        )
    processor = RGNetProcessor.from_config(config, tokenizer)
    set_seed(training_args.seed)  # before the model is built: its initial weights come from this seed
    if script_args.init_from is not None:
        model = RGNetForVideoGrounding.from_pretrained(script_args.init_from, config=config)
    else:
        model = RGNetForVideoGrounding(config)
    train_dataset = RGNetTrainingDataset(
        queries[script_args.train_split], store, processor, pair_mode=config.pair_mode, seed=training_args.seed
    )
    if earlier_checkpoints and training_args.process_index == 0:  # every check has passed: the run goes ahead
        logger.warning(
            "--overwrite_output_dir: deleting the earlier run's %s", ", ".join(map(str, earlier_checkpoints))
        )
        for checkpoint in earlier_checkpoints:
            shutil.rmtree(checkpoint)
    trainer = RGNetTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        feature_store=store,
        processing_class=processor,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    metrics = dict(result.metrics)
    trainer.log_metrics("train", result.metrics)  # printed by the main process, as the examples of transformers do
    if eval_dataset is not None:
        eval_metrics = last_evaluation_of_final_weights(trainer)
        if eval_metrics is None:
            eval_metrics = trainer.evaluate()
        else:
            logger.info(
                "The final weights were evaluated at step %d; those metrics are reported.", trainer.state.global_step
            )
        trainer.log_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if trainer.is_world_process_zero():
        Path(training_args.output_dir, "train_results.json").write_text(json.dumps(metrics, indent=2))
    # Every process waits until the main one has written its files, then the process group is torn down
    # (gloo aborts at exit otherwise).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return metrics


if __name__ == "__main__":
    run_script(main, errors=(ValueError, StrictDataclassError))
