import json
import subprocess
import sys

import pytest
import torch

from configuration_rgnet import RGNetConfig
from modeling_rgnet import RGNetForVideoGrounding
from processing_rgnet import RGNetProcessor
from scripts.benchmark_precision import REPO_ROOT, main

from .tiny_data import TINY_CONFIG, build_tiny_dataset


@pytest.fixture(scope="module")
def saved_model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    data = build_tiny_dataset(root / "data", num_videos=3, queries_per_video=3, splits=("validation", "test"))
    config = RGNetConfig(**TINY_CONFIG)
    torch.manual_seed(0)
    model_dir = root / "model"
    RGNetForVideoGrounding(config).save_pretrained(model_dir)
    RGNetProcessor.from_config(config).save_pretrained(model_dir)
    return model_dir, data


def test_precision_report_compares_bf16_with_fp32_on_every_query(saved_model_and_data, tmp_path):
    model_dir, data = saved_model_and_data
    output = tmp_path / "precision.json"
    argv = ["--model_dir", str(model_dir), "--dataset_dir", str(data), "--split", "validation,test"]
    report = main([*argv, "--device", "cpu", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    assert report["queries"] == 18 and report["videos"] == 6 and report["split"] == ["validation", "test"]
    for precision in ("fp32", "bf16", "bf16-weights"):
        assert report[precision]["metrics"]["num_queries"] == 18 and report[precision]["seconds"] > 0
    for key in ("bf16_top1_agreement", "bf16_weights_top1_agreement"):
        agreement = report[key]
        assert agreement["queries"] == 18 and 0.0 <= agreement["fraction"] <= 1.0
        assert agreement["same_top1_source"] <= agreement["queries"]
        assert agreement["iou_min"] <= agreement["iou_mean"]


def test_precision_report_names_a_missing_split(saved_model_and_data):
    model_dir, data = saved_model_and_data
    with pytest.raises(SystemExit, match="--split"):
        main(["--model_dir", str(model_dir), "--dataset_dir", str(data), "--split", "train", "--device", "cpu"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pairs_per_batch", "0"], "--pairs_per_batch must be >= 1, got 0"),
        (["--device", "gpu"], "--device gpu: not a torch device"),
        (["--output", "."], "`--output` '.' is a folder"),
    ],
)
def test_bad_arguments_are_refused_before_the_model_loads(saved_model_and_data, capsys, arguments, message):
    """`--pairs_per_batch 0` once failed in `predict_long_videos` after the model and data loaded, `--device gpu` in
    torch, and an `--output` folder when the report was written after every pass."""
    model_dir, data = saved_model_and_data
    with pytest.raises(SystemExit):
        main(["--model_dir", str(model_dir), "--dataset_dir", str(data), *arguments])
    assert message in capsys.readouterr().err


def test_a_folder_without_a_model_is_named_without_a_traceback(saved_model_and_data, tmp_path):
    """A `--model_dir` without a saved RGNet once ended in transformers' OSError traceback."""
    _, data = saved_model_and_data
    with pytest.raises(ValueError, match=r"`--model_dir` .* is not a saved RGNet model folder \(no config.json\)"):
        main(["--model_dir", str(tmp_path), "--dataset_dir", str(data), "--device", "cpu"])
    result = subprocess.run(
        [sys.executable, "scripts/benchmark_precision.py", "--model_dir", str(tmp_path), "--dataset_dir", str(data)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("benchmark_precision.py: error: `--model_dir`")
