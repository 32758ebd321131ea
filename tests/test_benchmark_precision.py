import json

import pytest
import torch

from configuration_rgnet import RGNetConfig
from modeling_rgnet import RGNetForVideoGrounding
from processing_rgnet import RGNetProcessor
from scripts.benchmark_precision import main

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
