"""The command-line parser of the project's scripts: `argparse`, with every long option in both spellings.

The training script parses its flags with transformers' `HfArgumentParser`, which accepts `--init_from` and
`--init-from` alike; the other scripts declare theirs in one spelling or the other (`--output_dir`,
`--num-train-videos`). [`ArgumentParser`] gives each long option its other spelling as an alias, so that every
script takes both, whichever it declares (the declared one comes first in `--help` and names the attribute).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "ArgumentParser",
    "add_device_argument",
    "check_device",
    "check_device_argument",
    "check_report_paths",
    "load_rgnet_config",
    "load_rgnet_model",
    "prepare_output_dir",
    "prepare_report_path",
    "run_script",
    "script_parser",
]


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose `add_argument` also registers each long option's other spelling (`_` and
    `-` exchanged) when the parser does not already have it."""

    def add_argument(self, *names: str, **kwargs):
        aliases = []
        for name in names:
            if not name.startswith("--"):
                continue
            body = name[2:]
            for other in (f"--{body.replace('_', '-')}", f"--{body.replace('-', '_')}"):
                if other not in names and other not in aliases and other not in self._option_string_actions:
                    aliases.append(other)
        return super().add_argument(*names, *aliases, **kwargs)


def script_parser(doc: str | None, **kwargs) -> ArgumentParser:
    """The parser of a script whose module docstring is `doc`: its first paragraph is the description."""
    return ArgumentParser(description=(doc or "").split("\n\n")[0], **kwargs)


def check_device(device: str) -> str | None:
    """What is wrong with a `--device` value on this machine (`None` when it can be used)."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        return "not a torch device (expected e.g. cpu, cuda or cuda:0)"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available here (this PyTorch build or machine has no usable GPU); use --device cpu"
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            return f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """`--device` of a script that runs a model: cpu, cuda or cuda:N, by default CUDA when it is available (checked
    by [`check_device_argument`])."""
    import torch

    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default: cuda when available)",
    )


def check_device_argument(parser: argparse.ArgumentParser, device: str, allow_auto: bool = False) -> None:
    """[`check_device`] as a usage error of `parser` (`"auto"` passes when `allow_auto`)."""
    problem = None if allow_auto and device == "auto" else check_device(device)
    if problem is not None:
        parser.error(f"--device {device}: {problem}")


def require_output_for_smoke_runs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A benchmark's `--tiny` run measures nothing worth keeping: it must name its `--output`, so that it cannot
    replace the measured results that the default paths under `benchmarks/results/` hold."""
    if args.tiny and args.output is None:
        parser.error(
            "--tiny is a smoke run: pass --output (the default path under benchmarks/results/ holds measured results)"
        )


def prepare_output_dir(path: str | Path, flag: str = "--output_dir") -> Path:
    """Create a script's output folder `path` (with its parents) before the long work (loading models, inference),
    so that an unusable one ends the run at once instead of after it.

    Raises:
        ValueError: naming `flag`, when `path` exists and is not a folder or cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"`{flag}` {str(path)!r} exists and is not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a parent that is a file, no permission, ...
        raise ValueError(f"`{flag}` {str(path)!r} cannot be created: {error}") from None
    return path


def prepare_report_path(path: str | Path, flag: str = "--output") -> Path:
    """Check a benchmark's report path `path` and create its folder before the measurements (minutes of them), so
    that a path that is a folder, or one under a file, ends the run at once instead of when the report is written.

    Raises:
        ValueError: naming `flag`, when `path` is a folder or its folder cannot be created.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`{flag}` {str(path)!r} is a folder; pass the path of the report file.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a parent that is a file, no permission, ...
        raise ValueError(f"`{flag}` {str(path)!r}: its folder cannot be created: {error}") from None
    return path


def check_report_paths(parser: argparse.ArgumentParser, paths: dict[str, str | Path | None]) -> None:
    """[`prepare_report_path`] for each `flag: path` given (`None`: not given), as a usage error of `parser`."""
    for flag, path in paths.items():
        if path is not None:
            try:
                prepare_report_path(path, flag)
            except ValueError as error:
                parser.error(str(error))


def load_rgnet_config(model_dir: str | Path, flag: str = "--model"):
    """The [`RGNetConfig`] of a saved model folder, read before the weights (so inputs can be checked against it
    first).

    Raises:
        ValueError: naming `flag`, when the folder has no config.json or holds another kind of model (a CLIP
            checkpoint given by mistake would otherwise fail later on a confusing size mismatch).
    """
    from configuration_rgnet import RGNetConfig
    from data_rgnet import read_json

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"`{flag}` {str(model_dir)!r} is not a saved RGNet model folder (no config.json).")
    config = read_json(model_dir / "config.json", flag)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != RGNetConfig.model_type:
        found = f"a {model_type!r} model" if model_type else "a config.json without model_type"
        raise ValueError(
            f"`{flag}` {str(model_dir)!r} holds {found}, not an RGNet model (model_type {RGNetConfig.model_type!r}): "
            "pass the folder of a trained or converted RGNet model."
        )
    return RGNetConfig.from_pretrained(model_dir)


def load_rgnet_model(model_dir: str | Path, flag: str = "--model", **kwargs):
    """`RGNetForVideoGrounding.from_pretrained(model_dir, **kwargs)` after [`load_rgnet_config`]'s checks.

    Raises:
        ValueError: naming `flag`, as [`load_rgnet_config`], or when the weights cannot be read (none saved, a
            truncated file).
    """
    from modeling_rgnet import RGNetForVideoGrounding

    load_rgnet_config(model_dir, flag)
    try:
        return RGNetForVideoGrounding.from_pretrained(model_dir, **kwargs)
    except OSError as error:  # transformers' "no file named model.safetensors", unreadable files
        raise ValueError(f"`{flag}` {str(model_dir)!r}: the model's weights cannot be loaded: {error}") from None


def run_script(main: Callable[[], object], errors: tuple[type[BaseException], ...] = (ValueError,)) -> None:
    """Run a script's `main` from the command line: an error of `errors` (bad input, named by its message) ends it
    with one `<script>: error: <message>` line and exit status 1, without a traceback."""
    try:
        main()
    except errors as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")
