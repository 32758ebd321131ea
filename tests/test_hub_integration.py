"""Hugging Face integration: Auto classes, remote-code folders, loading in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import AutoConfig, AutoModel

from configuration_rgnet import RGNetConfig
from modeling_rgnet import RGNetForVideoGrounding, RGNetModel

from .test_modeling_rgnet import RGNetModelTester


def tiny_model():
    torch.manual_seed(0)
    return RGNetForVideoGrounding(RGNetModelTester().get_config()).eval()


def test_auto_classes_resolve_the_rgnet_model_type(tmp_path):
    config = RGNetModelTester().get_config()
    assert isinstance(AutoConfig.for_model("rgnet", hidden_size=64, num_attention_heads=4), RGNetConfig)
    # The grounding model, as a saved folder's `auto_map` gives it (`RGNetModel` is the model without heads).
    assert isinstance(AutoModel.from_config(config), RGNetForVideoGrounding)
    tiny_model().save_pretrained(tmp_path / "grounding")
    assert isinstance(AutoModel.from_pretrained(tmp_path / "grounding"), RGNetForVideoGrounding)
    # A folder saved from the model without heads loads as that model: the choice follows `config.architectures`.
    RGNetModel(config).save_pretrained(tmp_path / "base")
    base = AutoModel.from_pretrained(tmp_path / "base")
    assert type(base) is RGNetModel
    assert type(AutoModel.from_pretrained(tmp_path / "base", trust_remote_code=True)) is RGNetModel


def test_save_pretrained_writes_code_files_and_auto_map(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    for name in ("configuration_rgnet.py", "modeling_rgnet.py", "loss_rgnet.py", "model.safetensors"):
        assert (tmp_path / name).is_file(), name
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_rgnet.RGNetConfig",
        "AutoModel": "modeling_rgnet.RGNetForVideoGrounding",
    }


def test_saved_folder_loads_with_trust_remote_code_in_a_fresh_process(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    inputs = RGNetModelTester().prepare_inputs(3)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs)
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "RGNetForVideoGrounding", type(model)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        again = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)  # the same class again
        assert type(again) is type(model), type(again)
        with torch.no_grad():
            outputs = model(**torch.load({str(tmp_path / "inputs.pt")!r}))
        torch.save({{"logits": outputs.logits, "window_logits": outputs.window_logits}}, {str(tmp_path / "out.pt")!r})
        """
    )
    # A clean interpreter outside the checkout: only the saved folder's code can define RGNet.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    env["HF_HUB_OFFLINE"] = "1"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    outputs = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(outputs["logits"], expected.logits, atol=0, rtol=0)
    torch.testing.assert_close(outputs["window_logits"], expected.window_logits, atol=0, rtol=0)


def test_saved_folder_loads_the_grounding_model_after_the_checkout_was_imported(tmp_path):
    """A process that imported the checkout's modules first (a user mixing both) still gets the grounding model from
    `AutoModel`, each time."""
    tiny_model().save_pretrained(tmp_path / "model")
    script = textwrap.dedent(
        f"""
        import modeling_rgnet, processing_rgnet
        from transformers import AutoModel
        for _ in range(2):
            model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
            assert type(model).__name__ == "RGNetForVideoGrounding", type(model)
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = checkout + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
