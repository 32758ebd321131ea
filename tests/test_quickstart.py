"""The README's main job, shortened: synthetic data → training → evaluation → reload in a fresh process → plot."""

import json
import subprocess
import sys

import pytest

from scripts import quickstart


def test_shortened_quickstart_runs_end_to_end(tmp_path, capfd):
    output_dir = tmp_path / "quickstart"
    results = quickstart.main(
        [
            "--output_dir",
            str(output_dir),
            "--seed",
            "3",
            "--max_train_steps",
            "12",
            "--dataset_setting",
            "num_train_videos=6",
            "--dataset_setting",
            "num_validation_videos=1",
            "--dataset_setting",
            "num_test_videos=2",
        ]
    )
    printed = capfd.readouterr().out
    assert "RGNet" in printed and "random baseline" in printed and "Ground truth" in printed
    stored = json.loads((output_dir / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(results))
    for name in ("R@1,IoU=0.3", "R@1,IoU=0.5", "R@5,IoU=0.3", "R@5,IoU=0.5", "mIoU", "WindowR@1"):
        assert 0.0 <= stored["rgnet"][name] <= 1.0 and 0.0 <= stored["random_baseline"][name] <= 1.0
    assert stored["training"]["steps"] == 12
    # Even 12 steps place some moments on the ground truth (2 of 9 queries here); moments in the wrong seconds
    # (e.g. without their window's offset) would place none.
    assert stored["rgnet"]["R@100,IoU=0.3"] > 0
    for name in ("config.json", "model.safetensors", "modeling_rgnet.py", "processor_config.json", "tokenizer.json"):
        assert (output_dir / "model" / name).is_file(), name
    demo = json.loads((output_dir / "demo.json").read_text())
    assert demo["loaded_class"].startswith("transformers_modules.")  # loaded from the saved folder's own code
    assert len(demo["top5"]) == 5 and (output_dir / "timeline.png").stat().st_size > 10_000
    # A second run reuses the dataset instead of rebuilding it.
    assert (tmp_path / "synthetic-3" / "rgnet_dataset.json").is_file()


def test_text_encoder_reproduces_the_dataset_word_vectors(tmp_path):
    import numpy as np
    import torch

    from configuration_rgnet import RGNetConfig
    from modeling_rgnet import RGNetForVideoGrounding
    from scripts.make_synthetic_dataset import encode_query, load_synthetic_vocabulary, make_synthetic_dataset

    path = make_synthetic_dataset(
        tmp_path / "data", num_train_videos=1, num_validation_videos=1, num_test_videos=1, progress=False
    )
    vocabulary = load_synthetic_vocabulary(path)
    tokenizer, text_config, embeddings = quickstart.build_text_encoder(vocabulary)
    model = RGNetForVideoGrounding(
        RGNetConfig(
            hidden_size=32,
            num_attention_heads=4,
            ffn_dim=64,
            video_feature_dim=64,
            pooled_text_dim=64,
            text_feature_dim=64,
            max_window_frames=64,
            text_config=text_config,
        )
    )
    quickstart.load_text_encoder_weights(model, embeddings)
    assert not any(p.requires_grad for p in model.model.text_encoder.parameters())
    sentence = "The red car jumps on screen."
    encoded = tokenizer([sentence], return_tensors="pt")
    features, mask = model.model.encode_text(encoded["input_ids"], encoded["attention_mask"])
    expected = torch.from_numpy(encode_query(sentence, vocabulary))
    # Final LayerNorm then L2 normalisation of each word vector: the same direction up to centring.
    expected = expected - expected.mean(-1, keepdim=True)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    assert mask.tolist() == [[1.0] * 6]
    np.testing.assert_allclose(features[0].detach().numpy(), expected.numpy(), atol=1e-4)


def test_quickstart_checks_its_arguments_before_creating_anything(tmp_path):
    """A bad `--dataset_setting` once ended in a ValueError traceback, after `--output_dir` was already made: the
    script now ends with one `quickstart.py: error:` line and creates nothing."""
    output_dir = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, quickstart.__file__, "--output_dir", str(output_dir), "--dataset_setting", "foo=1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "quickstart.py: error: `--dataset_setting` expects NAME=VALUE with NAME a SyntheticDatasetSettings field, "
        "got 'foo=1'."
    )
    # A value out of range is refused before anything is created too.
    with pytest.raises(ValueError, match="`num_test_videos` must be non-negative, got -1"):
        quickstart.main(["--output_dir", str(output_dir), "--dataset_setting", "num_test_videos=-1"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max_train_steps", "0"], "--max_train_steps must be >= 1 (or left out to train every epoch), got 0"),
        (["--max_train_steps", "-5"], "--max_train_steps must be >= 1"),
        (["--num_train_epochs", "0"], "--num_train_epochs must be a positive number, got 0.0"),
        (["--num_train_epochs", "nan"], "--num_train_epochs must be a positive number, got nan"),
    ],
)
def test_training_lengths_that_the_trainer_would_misread_are_refused(tmp_path, capsys, arguments, message):
    """The Trainer reads `max_steps=0` as no step and any other negative value as every epoch: `--max_train_steps 0`
    once trained nothing and `-5` the full 50 epochs, both silently."""
    with pytest.raises(SystemExit):
        quickstart.main(["--output_dir", str(tmp_path / "quickstart"), *arguments])
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_dataset_without_training_or_test_videos_is_refused_before_anything_is_created(tmp_path, split):
    """Without test videos the run once trained, then failed on an IndexError picking the demo query."""
    with pytest.raises(ValueError, match=f"`--dataset_setting num_{split}_videos` must be >= 1"):
        quickstart.main(["--output_dir", str(tmp_path / "quickstart"), "--dataset_setting", f"num_{split}_videos=0"])
    assert list(tmp_path.iterdir()) == []


def test_a_dataset_dir_that_is_a_file_is_named_before_the_output_dir_is_made(tmp_path):
    (tmp_path / "data").write_text("")
    with pytest.raises(ValueError, match="`--dataset_dir` .* exists and is not a folder"):
        quickstart.main(["--output_dir", str(tmp_path / "quickstart"), "--dataset_dir", str(tmp_path / "data")])
    assert [path.name for path in tmp_path.iterdir()] == ["data"]


def test_too_few_training_queries_for_one_batch_name_the_dataset_setting(tmp_path):
    """The Trainer's own error asked for a lower `--per_device_train_batch_size`, a flag the quickstart lacks."""
    settings = ["num_train_videos=1", "num_validation_videos=0", "num_test_videos=1", "max_targets_per_video=3"]
    arguments = ["--output_dir", str(tmp_path / "quickstart")]
    arguments += [item for setting in settings for item in ("--dataset_setting", setting)]
    with pytest.raises(
        ValueError, match="The 3 training queries are fewer than one batch of 8: raise `--dataset_setting"
    ):
        quickstart.main(arguments)
