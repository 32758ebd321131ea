"""`scripts/cli.py`: every script's long options in both spellings, `--a_b` and `--a-b`."""

import argparse

import pytest

from scripts.cli import (
    ArgumentParser,
    add_device_argument,
    check_device,
    check_device_argument,
    check_report_paths,
    prepare_output_dir,
    script_parser,
)


def test_each_long_option_takes_its_other_spelling():
    parser = ArgumentParser()
    parser.add_argument("--output_dir")
    parser.add_argument("--num-train-videos", type=int)
    parser.add_argument("-k", "--top_k", type=int, default=5)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("path")
    args = parser.parse_args(["x", "--output-dir", "o", "--num_train_videos", "3", "-k", "2", "--tiny"])
    assert (args.output_dir, args.num_train_videos, args.top_k, args.tiny, args.path) == ("o", 3, 2, True, "x")
    assert parser.parse_args(["x", "--output_dir", "p", "--top-k", "4"]).top_k == 4
    # The declared spelling comes first in --help and names the attribute.
    help_text = parser.format_help()
    assert "--output_dir OUTPUT_DIR, --output-dir OUTPUT_DIR" in help_text
    assert "--num-train-videos NUM_TRAIN_VIDEOS, --num_train_videos NUM_TRAIN_VIDEOS" in help_text


def test_spellings_a_script_declares_itself_are_not_added_twice():
    parser = ArgumentParser()
    parser.add_argument("--no_plot", "--no-plot", action="store_true")
    parser.add_argument("--plain", dest="value")
    parser.add_argument("--other-name", dest="value2")
    assert parser.parse_args(["--no-plot"]).no_plot and parser.parse_args(["--other_name", "v"]).value2 == "v"
    with pytest.raises(argparse.ArgumentError, match="conflicting option string: --other_name"):
        parser.add_argument("--other_name")  # a second option may not take an existing one's spelling


def test_script_parser_describes_the_script_by_its_docstring_summary():
    parser = script_parser("Make the data.\n\nLonger text.")
    assert parser.description == "Make the data." and script_parser(None).description == ""


def test_the_scripts_take_both_spellings(tmp_path, capsys):
    from scripts import make_synthetic_dataset
    from scripts.evaluate_rgnet import main as evaluate

    with pytest.raises(SystemExit):
        make_synthetic_dataset.main(["--num_train_videos", "-1", "--output", str(tmp_path / "d")])
    assert "`num_train_videos` must be non-negative, got -1" in capsys.readouterr().err  # parsed, then checked
    with pytest.raises(SystemExit):
        evaluate(["--model", "m", "--dataset-dir", "d", "--output-dir", "o", "--pairs-per-batch", "0"])
    assert "--pairs_per_batch must be >= 1, got 0" in capsys.readouterr().err


def test_run_script_ends_on_bad_input_with_one_error_line(monkeypatch):
    from scripts.cli import run_script

    def bad_input():
        raise ValueError("`video` 'x' does not exist.")

    monkeypatch.setattr("sys.argv", ["/somewhere/scripts/prepare_mad.py", "--flag"])
    with pytest.raises(SystemExit) as exit_info:
        run_script(bad_input)
    assert exit_info.value.code == "prepare_mad.py: error: `video` 'x' does not exist."
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: open("/no/such/file"), errors=(ValueError, OSError))
    assert str(exit_info.value.code).startswith("prepare_mad.py: error: [Errno 2]")
    with pytest.raises(OSError):  # not one of `errors`: raised as it is, with its traceback
        run_script(lambda: open("/no/such/file"))


def test_device_values_are_checked_before_use():
    assert check_device("cpu") is None
    assert "not a torch device" in check_device("gpu")
    import torch

    if not torch.cuda.is_available():
        assert "CUDA is not available here" in check_device("cuda")
    else:
        count = torch.cuda.device_count()
        assert check_device("cuda") is None and f"{count} CUDA device(s)" in check_device(f"cuda:{count}")


def test_device_flag_defaults_to_cuda_when_available_and_is_checked_as_a_usage_error(capsys):
    import torch

    parser = script_parser("A script.")
    add_device_argument(parser)
    args = parser.parse_args([])
    assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")
    check_device_argument(parser, "cpu")
    check_device_argument(parser, "auto", allow_auto=True)
    with pytest.raises(SystemExit) as exit_info:
        check_device_argument(parser, "auto")  # only where the script resolves it
    assert exit_info.value.code == 2 and "--device auto: not a torch device" in capsys.readouterr().err


def test_report_paths_are_checked_as_usage_errors_naming_the_flag(tmp_path, capsys):
    parser = script_parser("A benchmark.")
    check_report_paths(parser, {"--output": tmp_path / "new" / "report.json", "--profile": None})
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "report.json").exists()
    with pytest.raises(SystemExit):
        check_report_paths(parser, {"--output": None, "--profile": tmp_path})
    assert f"`--profile` {str(tmp_path)!r} is a folder" in capsys.readouterr().err


def test_output_folders_are_made_or_refused_with_the_flag_named(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert prepare_output_dir(tmp_path / "a") == tmp_path / "a"  # an existing folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="`--output_dir` '.*file' exists and is not a folder"):
        prepare_output_dir(tmp_path / "file")
    with pytest.raises(ValueError, match=r"`--save_to` '.*file/sub' cannot be created: \[Errno"):
        prepare_output_dir(tmp_path / "file" / "sub", flag="--save_to")
