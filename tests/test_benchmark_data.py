"""`scripts/benchmark_data.py`: its paths are checked before the store is built and timed (the report itself is tested
in `test_data_rgnet.py`)."""

import pytest

from scripts.benchmark_data import build_parser, main
from scripts.cli import prepare_report_path

SMALL = ["--num-videos", "1", "--frames", "20", "--dim", "4", "--window", "5", "--reads", "2", "--warmup", "0"]


def test_an_output_that_is_a_folder_or_under_a_file_is_refused_before_the_measurement(tmp_path, capsys):
    """Such an `--output` once failed with a traceback when the report was written, after the whole benchmark."""
    with pytest.raises(SystemExit):
        main([*SMALL, "--work-dir", str(tmp_path), "--output", str(tmp_path)])
    assert f"`--output` {str(tmp_path)!r} is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        main([*SMALL, "--work-dir", str(tmp_path), "--output", str(tmp_path / "file" / "report.json")])
    assert "its folder cannot be created" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]  # no store was built


def test_a_missing_work_dir_is_refused_by_name(tmp_path, capsys):
    """It once ended in tempfile's FileNotFoundError traceback."""
    with pytest.raises(SystemExit):
        main([*SMALL, "--work-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "report.json")])
    assert f"--work-dir {str(tmp_path / 'missing')!r} is not an existing folder" in capsys.readouterr().err


def test_prepare_report_path_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    assert prepare_report_path(path) == path and path.parent.is_dir() and not path.exists()
    with pytest.raises(ValueError, match="`--profile` .* is a folder"):
        prepare_report_path(tmp_path, "--profile")


def test_reads_help_states_the_cap_of_the_per_video_rows_layout():
    """That layout times `min(--reads, 50)` reads; the help once said every mode times `--reads`."""
    (reads,) = [action for action in build_parser()._actions if action.dest == "reads"]
    assert "at most 50 for --compare-per-video-rows" in reads.help
