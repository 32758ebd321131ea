"""The model cards under `model_cards/`: Hub metadata, the paper's published results, the documented features
and commands, and a usage example that runs as written against a tiny random model (no download)."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

from .test_own_video import TINY_CLIP_PROJECTION_DIM, write_tiny_clip, write_tiny_rgnet

REPO_ROOT = Path(__file__).resolve().parents[1]
CARDS = REPO_ROOT / "model_cards"

# Published RGNet results (paper, ECCV 2024; docs/benchmarks.md): metric name -> value, in %.
PUBLISHED = {
    "rgnet-mad": {
        "R@1 IoU>0.1": 12.43,
        "R@1 IoU>0.3": 9.48,
        "R@1 IoU>0.5": 5.61,
        "R@5 IoU>0.1": 25.12,
        "R@5 IoU>0.3": 18.72,
        "R@5 IoU>0.5": 10.86,
    },
    "rgnet-ego4d": {"R@1 IoU>0.3": 20.63, "R@5 IoU>0.3": 41.67},
}
# What each card must say about the features its checkpoint expects.
FEATURE_PHRASES = {
    "rgnet-mad": ["CLIP ViT-B/32", "5 fps", "image_embeds", "text_embeds", "(T, 512)"],
    "rgnet-ego4d": ["EgoVLP", "0.535 s", "CLIP ViT-B/32", "(T, 256)"],
}
# The preset each card's example runs on, and the feature files it loads (name -> shape for a tiny model).
EXAMPLES = {
    "rgnet-mad": ("mad", {"movie_clip_b32_5fps.npy": (47, TINY_CLIP_PROJECTION_DIM)}),
    "rgnet-ego4d": (
        "ego4d-nlq-finetune",
        {"clip_egovlp_features.npy": (31, TINY_CLIP_PROJECTION_DIM), "question_egovlp_embedding.npy": (16,)},
    ),
}


def code_blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def section(text, title):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.DOTALL | re.MULTILINE)
    assert match, f"section {title!r} missing"
    return match.group(1)


@pytest.fixture(params=sorted(PUBLISHED))
def card_name(request):
    return request.param


def test_card_metadata_has_the_hub_fields(card_name):
    data = ModelCard.load(CARDS / card_name / "README.md").data
    assert data.library_name == "transformers"
    assert data.license == "cc-by-nc-nd-4.0"  # weights converted from the original release
    assert {"video-grounding", "temporal-grounding", "rgnet", "custom_code"} <= set(data.tags)
    assert data.datasets and data.metrics == ["recall"]
    assert data.model_name == card_name


def test_model_index_holds_the_papers_results_labelled_as_such(card_name):
    card = ModelCard.load(CARDS / card_name / "README.md")
    results = card.data.eval_results
    assert {result.metric_name.removesuffix(" (paper)"): result.metric_value for result in results} == (
        PUBLISHED[card_name]
    )
    for result in results:
        assert result.metric_name.endswith("(paper)") and result.metric_type == "recall"
        assert result.verified is False
        assert "original RGNet paper" in result.source_name and "not re-measured" in result.source_name
        assert result.source_url == "https://arxiv.org/abs/2312.06729"
        k, iou = re.fullmatch(r"R@(\d) IoU>(0\.\d) \(paper\)", result.metric_name).groups()
        assert result.metric_args == {"k": int(k), "iou_threshold": float(iou)}
    # The prose table repeats the same numbers.
    table = section(card.text, "Evaluation results (from the paper)")
    for value in PUBLISHED[card_name].values():
        assert f"{value:.2f}" in table
    assert "published in the original RGNet paper" in table


def test_card_documents_use_limits_and_expected_features(card_name):
    text = (CARDS / card_name / "README.md").read_text()
    for title in ("Intended use and limits", "Expected inputs", "Usage", "Converting the original checkpoint"):
        section(text, title)
    limits = section(text, "Intended use and limits")
    assert "CC BY-NC-ND 4.0" in limits and "features must match" in limits
    inputs = section(text, "Expected inputs")
    for phrase in FEATURE_PHRASES[card_name]:
        assert phrase in inputs, phrase


def test_documented_commands_use_existing_script_flags(card_name):
    text = (CARDS / card_name / "README.md").read_text()
    commands = " ".join(code_blocks(text, "bash")).replace("\\\n", " ")
    scripts = set(re.findall(r"scripts/(\w+)\.py", commands))
    assert "convert_original_rgnet_checkpoint" in scripts
    for script in scripts:
        source = (REPO_ROOT / "scripts" / f"{script}.py").read_text()
        invocations = re.findall(rf"scripts/{script}\.py((?: +--\w+(?: +(?:\"[^\"]*\"|[^-\s]\S*))?)+)", commands)
        assert invocations, f"no parsable call of scripts/{script}.py"
        for invocation in invocations:
            for flag in re.findall(r"--\w+", invocation):
                assert f'"{flag}"' in source, f"{flag} is not an option of scripts/{script}.py"
    assert "--original_options" in section(text, "Converting the original checkpoint")


def test_usage_example_runs_as_written_on_a_tiny_model(card_name, tmp_path):
    text = (CARDS / card_name / "README.md").read_text()
    (example,) = code_blocks(section(text, "Usage"), "python")
    preset, feature_files = EXAMPLES[card_name]
    write_tiny_rgnet(tmp_path / "model", preset=preset)
    write_tiny_clip(tmp_path / "clip")
    # Only the two checkpoint ids change: the Hub repository and CLIP become the local tiny ones.
    example, replaced = re.subn(r'^repo_id = "[^"]+"', f"repo_id = {str(tmp_path / 'model')!r}", example, flags=re.M)
    assert replaced == 1
    example, replaced = re.subn(r'^clip_id = "[^"]+"', f"clip_id = {str(tmp_path / 'clip')!r}", example, flags=re.M)
    assert replaced == 1
    rng = np.random.default_rng(0)
    for name, shape in feature_files.items():
        assert f'np.load("{name}")' in example
        np.save(tmp_path / name, rng.normal(size=shape).astype(np.float32))
    (tmp_path / "example.py").write_text(example)

    # A clean interpreter outside the checkout: the RGNet classes come from the saved folder's code.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    completed = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line for line in completed.stdout.splitlines() if "score" in line]
    assert len(lines) == 5, completed.stdout
    scores = [float(line.split("score")[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert all(re.fullmatch(r"\s*-?\d+\.\d s - \s*-?\d+\.\d s   score -?\d+\.\d{3}", line) for line in lines), lines


def test_card_folders_hold_the_preset_configs(tmp_path):
    for name in ("rgnet-mad", "rgnet-ego4d"):
        assert (CARDS / name / "config.json").is_file()
    assert "rgnet-ego4d-naq-pretrain" in (CARDS / "rgnet-ego4d" / "README.md").read_text()
    # Uploaded with the code files, each folder loads with `trust_remote_code=True` (the cards' usage): its config
    # carries the `auto_map` a saved model writes.
    write_tiny_rgnet(tmp_path, preset="mad", tokenizer=None)
    saved = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    for config_file in CARDS.glob("*/config.json"):
        assert json.loads(config_file.read_text())["auto_map"] == saved, config_file


def test_examples_in_cards_are_valid_python(card_name):
    for block in code_blocks((CARDS / card_name / "README.md").read_text(), "python"):
        compile(textwrap.dedent(block), card_name, "exec")


def test_ego4d_card_says_the_grounding_script_cannot_take_the_egovlp_sentence_embedding():
    # `scripts/ground_video.py` reads only CLIP text embeddings (512-d, not the 256-d EgoVLP space): for an Ego4D
    # model it always skips the matching score, unlike the card's Python usage.
    source = (REPO_ROOT / "scripts" / "ground_video.py").read_text()
    flags = re.findall(r'add_argument\(\s*"(--\w+)"', source)
    assert "--query" in flags and not [flag for flag in flags if "sentence" in flag or "embedding" in flag]
    text = " ".join((CARDS / "rgnet-ego4d" / "README.md").read_text().split())
    assert "no input for the EgoVLP sentence embedding" in text
    assert "ranks moments by proposal score alone" in text
