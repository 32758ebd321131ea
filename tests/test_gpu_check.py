"""`scripts/gpu_check.sh`, which runs every GPU check in one go, without a GPU.

Device time is scarce, so a misspelt option, a rejected combination or a wrong path must show here. The fast tests
run the script (a copy in a temporary repository root, so that nothing is written beside the real one) with a stand-in
Python that records each command line instead of running it, then parse every recorded command with its target's own
argument checks; the slow test runs the dry run (`RGNET_GPU_CHECK_DRY_RUN=1`) of a few steps for real on the CPU.
"""

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from scripts.benchmark_model import PRECISIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"

# Invocations of each script in a full run (every step, compiled runs included, RGNET_TRAINED_MODEL set).
EXPECTED_COUNTS = {
    "scripts/benchmark_model.py": 13,
    "scripts/benchmark_attention.py": 2,
    "scripts/make_synthetic_dataset.py": 1,
    "scripts/benchmark_precision.py": 1,
    "pytest": 1,
}
# Options whose value a dry run changes (the device and the repetitions) or that name its own files.
DRY_RUN_VALUES = {"--device", "--steps", "--warmup", "--output", "--profile", "--dataset_dir"}


def _run_script(tmp_path: Path, record: Path, **environment: str) -> subprocess.CompletedProcess:
    """The script, copied into an empty repository root under `tmp_path`, with `PYTHON` a stand-in that appends its
    arguments to `record` (one JSON list per line) and succeeds."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, root / "scripts" / "gpu_check.sh")
    python = tmp_path / "record_python"
    python.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['GPU_CHECK_RECORD'], 'a') as file:\n"
        "    file.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RGNET_", "OUT"))}
    env.update(PYTHON=str(python), GPU_CHECK_RECORD=str(record), TMPDIR=str(tmp_path), **environment)
    return subprocess.run(
        ["bash", str(root / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )


def _commands(tmp_path: Path, name: str, **environment: str) -> dict[str, list[list[str]]]:
    """The Python command lines of one run, by script (`pytest` for `-m pytest`; `-c` checks left out)."""
    record = tmp_path / f"{name}.jsonl"
    result = _run_script(tmp_path / name, record, RGNET_TRAINED_MODEL=str(tmp_path / "model"), **environment)
    assert result.returncode == 0, result.stdout + result.stderr
    commands: dict[str, list[list[str]]] = {}
    for line in record.read_text().splitlines():
        argv = json.loads(line)
        if argv[0] == "-c":
            continue
        key, arguments = ("pytest", argv[2:]) if argv[:2] == ["-m", "pytest"] else (argv[0], argv[1:])
        commands.setdefault(key, []).append(arguments)
    return commands


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The command lines of the GPU run and of the dry run."""
    tmp_path = tmp_path_factory.mktemp("gpu_check")
    return _commands(tmp_path, "gpu"), _commands(tmp_path, "dry", RGNET_GPU_CHECK_DRY_RUN="1"), tmp_path / "dry"


def test_bash_accepts_the_script():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_step_runs_the_expected_commands(recorded):
    for commands in recorded[:2]:
        assert {key: len(value) for key, value in commands.items()} == EXPECTED_COUNTS


def _options(arguments: list[str]) -> dict[str, str | None]:
    options, previous = {}, None
    for argument in arguments:
        if argument.startswith("--"):
            options[argument] = None
            previous = argument
        elif previous is not None:
            options[previous] = argument
            previous = None
    return options


def test_the_dry_run_keeps_every_option_of_the_gpu_run(recorded):
    gpu, dry, dry_tmp = recorded
    for script, gpu_commands in gpu.items():
        for gpu_arguments, dry_arguments in zip(gpu_commands, dry[script], strict=True):
            gpu_options, dry_options = _options(gpu_arguments), _options(dry_arguments)
            assert gpu_options.keys() <= dry_options.keys(), (gpu_arguments, dry_arguments)
            for option, value in gpu_options.items():
                if option not in DRY_RUN_VALUES:
                    assert dry_options[option] == value, (option, gpu_arguments, dry_arguments)
            if "--device" in gpu_options:
                assert gpu_options["--device"] == "cuda" and dry_options["--device"] == "cpu"
                assert ("--tiny" in dry_options) == (script != "scripts/benchmark_precision.py")
            if script == "scripts/benchmark_model.py":
                assert dry_options["--steps"] == "1"
                assert dry_options["--warmup"] == (gpu_options.get("--warmup") if "--compile" in gpu_options else "0")
                # What benchmark_model.py chooses by itself on CUDA, given on the CPU.
                assert dry_options["--precisions"] == gpu_options.get("--precisions", ",".join(PRECISIONS))
                assert dry_options["--overlap-post-processing"] == gpu_options.get("--overlap-post-processing", "on")
            added = dry_options.keys() - gpu_options.keys()
            assert added <= {"--tiny", "--warmup", "--precisions", "--overlap-post-processing"}, added
            # The dry run's files are in its own temporary folder (under $TMPDIR), under the same names.
            for option in ("--output", "--profile", "--dataset_dir"):
                if option in gpu_options:
                    assert Path(dry_options[option]).name == Path(gpu_options[option]).name
                    folder = Path(dry_options[option]).relative_to(dry_tmp).parts[0]
                    assert folder.startswith("gpu_check_dry_run."), dry_options[option]
    gpu_outputs = [_options(arguments)["--output"] for arguments in gpu["scripts/benchmark_model.py"]]
    assert all(output.startswith("benchmarks/results/") for output in gpu_outputs)
    assert len(set(gpu_outputs)) == len(gpu_outputs)  # no step overwrites another's report
    assert "-k" not in gpu["pytest"][0] and "-k" in dry["pytest"][0]


@pytest.fixture
def benchmark_model_stubbed(monkeypatch):
    """`benchmark_model.main` on a machine "with CUDA" that runs no workload: it records them."""
    from scripts import benchmark_model

    ran = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(benchmark_model, "environment_info", lambda device: {"device": str(device)})
    monkeypatch.setattr(benchmark_model, "_run_workload", lambda name, *args: ran.append(name) or {})
    monkeypatch.setattr(benchmark_model, "_release_host_memory", lambda: None)  # `gc.collect`, slow in pytest
    return benchmark_model, ran


@pytest.fixture
def exact_options(monkeypatch):
    """Every parser refuses an option it does not spell exactly (argparse takes an unambiguous prefix, so a
    truncated option would otherwise pass)."""
    parse_args = argparse.ArgumentParser.parse_args
    parsed = []

    def checked(self, args=None, namespace=None):
        for argument in args:
            if argument.startswith("--"):
                assert argument.split("=")[0] in self._option_string_actions, (self.prog, argument)
        parsed.append(args)
        return parse_args(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", checked)
    return parsed


@pytest.mark.parametrize("run", ["gpu", "dry"])
def test_every_command_passes_its_scripts_argument_checks(
    recorded, run, benchmark_model_stubbed, exact_options, tmp_path, monkeypatch
):
    commands = dict(zip(("gpu", "dry"), recorded[:2], strict=True))[run]
    monkeypatch.chdir(tmp_path)  # the GPU run's relative outputs land here
    benchmark_model, ran = benchmark_model_stubbed
    for arguments in commands["scripts/benchmark_model.py"]:
        ran.clear()
        report = benchmark_model.main(arguments)
        assert ran == report["settings"]["workloads"] and ran  # past every check, each workload reached

    from scripts import benchmark_attention, benchmark_precision, make_synthetic_dataset

    for arguments in commands["scripts/benchmark_attention.py"]:
        args = benchmark_attention._parse_args(arguments)
        assert args.precision in ("bf16", "fp32")

    (arguments,) = commands["scripts/make_synthetic_dataset.py"]
    args = make_synthetic_dataset.build_parser().parse_args(arguments)
    assert make_synthetic_dataset._parse_overrides(args.set, own_flags=make_synthetic_dataset.FLAG_SETTINGS) == {}

    class Parsed(Exception):
        pass

    def loaded(model_dir, flag):
        raise Parsed(model_dir)

    (precision_arguments,) = commands["scripts/benchmark_precision.py"]
    monkeypatch.setattr(benchmark_precision, "load_rgnet_model", loaded)
    with pytest.raises(Parsed):  # parsed, the device accepted: the model is loaded next
        benchmark_precision.main(precision_arguments)
    precision_options = _options(precision_arguments)
    assert precision_options["--dataset_dir"] == str(args.output)  # the data set the step builds
    assert set(precision_options["--split"].split(",")) <= set(make_synthetic_dataset.SPLITS)
    assert len(exact_options) == sum(len(commands[key]) for key in EXPECTED_COUNTS if key != "pytest")


def test_the_pytest_step_names_existing_tests(recorded):
    gpu, dry, _ = recorded
    (arguments,) = gpu["pytest"]
    files = [argument for argument in arguments if argument.startswith("tests/") and "::" not in argument]
    deselected = [arguments[i + 1] for i, argument in enumerate(arguments) if argument == "--deselect"]
    assert len(files) == 3 and len(deselected) == 2
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    test_ids = set(collected.stdout.splitlines())
    assert set(deselected) <= test_ids  # a misspelt --deselect would be ignored and run minutes of compiling
    (dry_arguments,) = dry["pytest"]
    selection = dry_arguments[dry_arguments.index("-k") + 1]
    names = [name.strip() for name in selection.split(" or ")]
    assert names and all(any(name in test_id for test_id in test_ids) for name in names)


def test_the_pytest_step_runs_a_given_selection(tmp_path):
    commands = _commands(tmp_path, "selected", RGNET_GPU_CHECK_STEPS="tests", RGNET_GPU_TESTS_K="copies or packed")
    (arguments,) = commands["pytest"]
    assert arguments[arguments.index("-k") + 1] == "copies or packed"


def test_a_misspelt_step_or_dry_run_value_stops_the_script(tmp_path):
    result = _run_script(tmp_path, tmp_path / "record.jsonl", RGNET_GPU_CHECK_STEPS="benchmark,atention")
    assert result.returncode == 2 and "unknown step 'atention'" in result.stderr
    result = _run_script(tmp_path, tmp_path / "record.jsonl", RGNET_GPU_CHECK_DRY_RUN="yes")
    assert result.returncode == 2 and "RGNET_GPU_CHECK_DRY_RUN must be 0 or 1" in result.stderr
    assert not (tmp_path / "record.jsonl").exists()  # stopped before any command


@pytest.fixture
def untrained_synthetic_model(tmp_path):
    """An untrained model saved as the quickstart saves its own (the text encoder of the synthetic data set's words,
    the data set's feature widths and windows), smaller, for the default synthetic data set; built in seconds."""
    from configuration_rgnet import RGNetConfig
    from modeling_rgnet import RGNetForVideoGrounding
    from processing_rgnet import RGNetProcessor
    from scripts import quickstart
    from scripts.make_synthetic_dataset import SyntheticDatasetSettings, build_vocabulary

    settings = SyntheticDatasetSettings()
    tokenizer, text_config, embeddings = quickstart.build_text_encoder(build_vocabulary(settings))
    small = {"hidden_size": 16, "num_attention_heads": 2, "ffn_dim": 32, "num_moment_queries": 2, "top_k_windows": 2}
    small.update(num_text_to_video_layers=1, num_encoder_layers=1, num_decoder_layers=1)
    config = RGNetConfig(**settings.recommended_config(), **small, text_config=text_config)
    torch.manual_seed(0)
    model = RGNetForVideoGrounding(config)
    quickstart.load_text_encoder_weights(model, embeddings)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    RGNetProcessor.from_config(config, tokenizer=tokenizer).save_pretrained(model_dir)
    return model_dir


@pytest.mark.slow
def test_dry_run_of_two_steps_on_the_cpu(tmp_path, untrained_synthetic_model):
    """The eager benchmark of every workload, and the precision agreement of a saved model on the synthetic test and
    validation videos, run for real on the CPU (about 45 s on 2 cores, half of it imports): their archive holds the
    reports, nothing else is left behind."""
    out = tmp_path / "out"
    out.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RGNET_", "OUT"))}
    env.update(
        RGNET_GPU_CHECK_DRY_RUN="1",
        RGNET_GPU_CHECK_STEPS="benchmark,trained",
        RGNET_TRAINED_MODEL=str(untrained_synthetic_model),
        PYTHON=sys.executable,
        OUT=str(out),
        TMPDIR=str(tmp_path),
    )
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check_results.tar.gz"]
    assert not list(tmp_path.glob("gpu_check_dry_run.*"))  # the dry run's folder is deleted, data set and all
    with tarfile.open(out / "gpu_check_results.tar.gz") as archive:
        archive.extractall(tmp_path / "results", filter="data")
    results = tmp_path / "results"
    names = {"gpu_environment.txt", "gpu_benchmark.log", "model_cuda.json", "model_cuda_precision_trained.json"}
    assert {path.name for path in results.iterdir()} == names
    assert "dry run on the CPU" in (results / "gpu_environment.txt").read_text()

    model = json.loads((results / "model_cuda.json").read_text())
    assert model["environment"]["device_kind"] == "cpu"
    settings = model["settings"]
    assert settings["tiny"] is True and settings["steps"] == 1 and settings["warmup"] == 0
    assert settings["precisions"] == list(PRECISIONS)  # CUDA's default
    workloads = model["workloads"]
    assert len(workloads) == 5
    assert all(entry["overlap_post_processing"] is True for entry in workloads.values() if "num_windows" in entry)
    assert all("bf16" in entry for entry in workloads.values() if entry["kind"] == "train")
    trained = json.loads((results / "model_cuda_precision_trained.json").read_text())
    assert trained["environment"]["device_kind"] == "cpu" and trained["split"] == ["test", "validation"]
    assert trained["queries"] > 100  # the default synthetic data set, seed 0
    for key in ("bf16_top1_agreement", "bf16_weights_top1_agreement"):
        assert trained[key]["queries"] == trained["queries"]
