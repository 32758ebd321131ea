"""`push_to_hub` of model, processor, config and model card, and the Trainer's hub push, without a network.

`HfApi.create_repo`, `HfApi.create_commit` (model/config/processor/card pushes) and `HfApi.upload_folder` (Trainer
pushes) are patched at class level by a fake hub that writes every uploaded file into a local folder per
repository; the tests then load that folder with `AutoModel`/`AutoProcessor`/`AutoConfig` and
`trust_remote_code=True` in a fresh interpreter, so the RGNet classes can only come from the uploaded files.
"""

import concurrent.futures
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from huggingface_hub.utils import filter_repo_objects

from processing_rgnet import RGNetDataCollator, RGNetProcessor

from .test_own_video import TINY_CLIP_PROJECTION_DIM, TINY_CLIP_TEXT_DIM, build_tiny_clip_tokenizer, tiny_rgnet_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_FILES = {"configuration_rgnet.py", "modeling_rgnet.py", "loss_rgnet.py"}
PROCESSOR_FILES = {"processing_rgnet.py", "processor_config.json", "tokenizer.json", "tokenizer_config.json"}


class FakeHub:
    """Stands in for the Hub: records repositories and commits and stores the uploaded files under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.repos: list[str] = []
        self.commits: list[tuple[str, str, list[str]]] = []  # (repo_id, message, paths in repo)

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def _commit(self, repo_id, message, files):
        """`files`: (path in repo, bytes)."""
        for path_in_repo, content in files:
            target = self.repo_dir(repo_id) / path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        self.commits.append((repo_id, message, sorted(path for path, _ in files)))
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{len(self.commits):040x}",
            commit_message=message or "",
            commit_description="",
            oid=f"{len(self.commits):040x}",
        )

    def patch(self, monkeypatch):
        hub = self

        def create_repo(self, repo_id, *args, **kwargs):
            hub.repos.append(repo_id)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_commit(self, repo_id, operations, *args, commit_message=None, **kwargs):
            files = []
            for operation in operations:
                source = operation.path_or_fileobj
                if isinstance(source, (str, Path)):
                    content = Path(source).read_bytes()  # temporary folders vanish after the push
                elif isinstance(source, bytes):
                    content = source
                else:
                    content = source.read()
                files.append((operation.path_in_repo, content))
            return hub._commit(repo_id, commit_message, files)

        def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, **kwargs):
            allow_patterns, ignore_patterns = kwargs.get("allow_patterns"), kwargs.get("ignore_patterns")
            folder = Path(folder_path)
            relative = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
            kept = filter_repo_objects(relative, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
            prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
            info = hub._commit(
                repo_id, commit_message, [(prefix + name, (folder / name).read_bytes()) for name in kept]
            )
            if kwargs.get("run_as_future"):
                future = concurrent.futures.Future()
                future.set_result(info)
                return future
            return info

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        # `ModelCard.push_to_hub` asks the Hub to validate the YAML; here the metadata is parsed locally instead
        # (test_model_cards.py checks its content).
        monkeypatch.setattr(ModelCard, "validate", lambda self, repo_type=None: ModelCard(str(self)).data)
        # Anything else that would reach the network (e.g. reading an existing model card) fails fast instead.
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub")
    hub.patch(monkeypatch)
    return hub


def tiny_model_and_processor(seed=0):
    from modeling_rgnet import RGNetForVideoGrounding

    torch.manual_seed(seed)
    model = RGNetForVideoGrounding(tiny_rgnet_config("mad")).eval()
    processor = RGNetProcessor.from_config(model.config, tokenizer=build_tiny_clip_tokenizer())
    return model, processor


def expected_grounding(model, processor, tmp_path):
    """Inputs saved for the fresh process, and this process's outputs on them."""
    rng = np.random.default_rng(0)
    video = rng.normal(size=(40, TINY_CLIP_PROJECTION_DIM)).astype(np.float32)
    tokens = rng.normal(size=(5, TINY_CLIP_TEXT_DIM)).astype(np.float32)
    sentence = rng.normal(size=(TINY_CLIP_PROJECTION_DIM,)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", video=video, tokens=tokens, sentence=sentence)
    inputs = processor(video_features=video, text_features=tokens)
    with torch.no_grad():
        outputs = model(**inputs)
    moments = processor.post_process_video_grounding(
        outputs, inputs.window_metadata, video_features=video, sentence_embeddings=sentence
    )[0]
    return outputs, moments


def load_in_fresh_process(repo_dir: Path, tmp_path: Path) -> dict:
    """Load the uploaded repository with the Auto classes in a clean interpreter and ground the saved inputs."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        import torch
        from transformers import AutoConfig, AutoModel, AutoProcessor

        repo = {str(repo_dir)!r}
        config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
        model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
        for obj in (config, model, processor):
            assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
        assert type(model).__name__ == "RGNetForVideoGrounding" and type(processor).__name__ == "RGNetProcessor"
        arrays = np.load({str(tmp_path / "inputs.npz")!r})
        inputs = processor(video_features=arrays["video"], text_features=arrays["tokens"])
        with torch.no_grad():
            outputs = model(**inputs)
        moments = processor.post_process_video_grounding(
            outputs, inputs.window_metadata, video_features=arrays["video"], sentence_embeddings=arrays["sentence"]
        )[0]
        ids = processor.tokenizer("the man and the dog.")["input_ids"]
        torch.save({{"logits": outputs.logits, "window_logits": outputs.window_logits,
                     "predictions": moments["predictions"], "ids": ids, "stride": processor.window_stride,
                     "config_window": config.max_window_frames}}, {str(tmp_path / "reloaded.pt")!r})
        """
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update({"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return torch.load(tmp_path / "reloaded.pt")


def assert_reloaded_matches(reloaded, model, processor, outputs, moments):
    torch.testing.assert_close(reloaded["logits"], outputs.logits, atol=0, rtol=0)
    torch.testing.assert_close(reloaded["window_logits"], outputs.window_logits, atol=0, rtol=0)
    torch.testing.assert_close(reloaded["predictions"], moments["predictions"], atol=0, rtol=0)
    assert reloaded["ids"] == processor.tokenizer("the man and the dog.")["input_ids"]
    assert reloaded["stride"] == processor.window_stride
    assert reloaded["config_window"] == model.config.max_window_frames


def test_push_to_hub_of_model_processor_config_and_card_gives_a_loadable_repository(fake_hub, tmp_path):
    repo_id = "rgnet-test/tiny-rgnet"
    model, processor = tiny_model_and_processor()
    model.push_to_hub(repo_id)
    processor.push_to_hub(repo_id)
    model.config.push_to_hub(repo_id)
    card = ModelCard.load(REPO_ROOT / "model_cards" / "rgnet-mad" / "README.md")
    card.push_to_hub(repo_id)  # last, so the hand-written card replaces the generated ones

    assert set(fake_hub.repos) == {repo_id} and len(fake_hub.commits) == 4
    assert all(commit[0] == repo_id for commit in fake_hub.commits)
    model_commit, processor_commit, config_commit, card_commit = (commit[2] for commit in fake_hub.commits)
    assert {"config.json", "model.safetensors"} | CODE_FILES <= set(model_commit)
    assert PROCESSOR_FILES <= set(processor_commit)
    assert "config.json" in config_commit and card_commit == ["README.md"]
    repo_dir = fake_hub.repo_dir(repo_id)
    assert ModelCard.load(repo_dir / "README.md").data.license == "cc-by-nc-nd-4.0"

    outputs, moments = expected_grounding(model, processor, tmp_path)
    reloaded = load_in_fresh_process(repo_dir, tmp_path)
    assert_reloaded_matches(reloaded, model, processor, outputs, moments)


def test_feature_only_processor_saves_and_pushes_in_one_call(fake_hub, tmp_path):
    processor = RGNetProcessor.from_config(tiny_rgnet_config(preset="ego4d-nlq-finetune"))
    repo_id = "rgnet-test/features"
    paths = processor.save_pretrained(tmp_path / "features", push_to_hub=True, repo_id=repo_id, commit_message="up")
    assert [Path(path).name for path in paths] == ["processor_config.json"]
    assert fake_hub.repos == [repo_id] and fake_hub.commits[0][:2] == (repo_id, "up")
    for folder in (tmp_path / "features", fake_hub.repo_dir(repo_id)):
        loaded = RGNetProcessor.from_pretrained(folder)
        assert loaded.tokenizer is None
        assert all(getattr(loaded, name) == getattr(processor, name) for name in RGNetProcessor.SETTINGS)


def training_samples(num_samples=4, seed=0):
    """Positive-window samples shaped like `read_training_example`'s output (12 frames, 16-d; 24-d tokens)."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(num_samples):
        start = int(rng.integers(1, 8))
        sample = {
            "video_features": rng.normal(size=(12, TINY_CLIP_PROJECTION_DIM)).astype(np.float32),
            "span": np.array([(start + 2) / 12, 4 / 12], dtype=np.float32),
            "saliency_positive_frames": np.array([start, start + 1]),
            "saliency_negative_frames": np.array([0 if start > 1 else 11, 11]),
            "text_features": rng.normal(size=(int(rng.integers(2, 6)), TINY_CLIP_TEXT_DIM)).astype(np.float32),
            "noise_seed": index,
        }
        samples.append(sample)
    return samples


def test_trainer_push_to_hub_gives_a_loadable_repository(fake_hub, tmp_path):
    from training_rgnet import RGNetTrainer, RGNetTrainingArguments

    repo_id = "rgnet-test/trainer-push"
    model, processor = tiny_model_and_processor()
    model.train()
    arguments = RGNetTrainingArguments(
        output_dir=str(tmp_path / "run"),
        push_to_hub=True,
        hub_model_id=repo_id,
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = RGNetTrainer(
        model=model,
        args=arguments,
        train_dataset=training_samples(),
        data_collator=RGNetDataCollator(processor),
        processing_class=processor,
    )
    before = {name: value.clone() for name, value in model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[name], value) for name, value in model.named_parameters())  # it trained
    trainer.push_to_hub()

    assert fake_hub.repos == [repo_id]
    (commit,) = [commit for commit in fake_hub.commits if commit[1] == "End of training"]
    uploaded = set(commit[2])
    assert {"config.json", "model.safetensors", "README.md", "training_args.bin"} | CODE_FILES <= uploaded
    assert PROCESSOR_FILES <= uploaded
    assert not any(name.startswith(("checkpoint-", "_")) for name in uploaded)

    model.eval()
    outputs, moments = expected_grounding(model, processor, tmp_path)
    reloaded = load_in_fresh_process(fake_hub.repo_dir(repo_id), tmp_path)
    assert_reloaded_matches(reloaded, model, processor, outputs, moments)


def test_model_push_without_a_remote_card_opens_no_connection_and_uploads_a_generated_card(fake_hub, monkeypatch):
    # Offline, `push_to_hub` does not try huggingface.co for the repository's existing card (tens of seconds of
    # retries online without a network); it generates one instead.
    connections = []

    def refuse(*args):
        connections.append(args)
        raise OSError("test: no network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # a host name is looked up first
    monkeypatch.setattr(socket.socket, "connect", refuse)
    model, _ = tiny_model_and_processor()
    model.push_to_hub("rgnet-test/offline")
    assert connections == []
    assert (fake_hub.repo_dir("rgnet-test/offline") / "README.md").is_file()
