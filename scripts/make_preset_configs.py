"""Write the `config.json` of every published recipe preset under `model_cards/` (from `RGNET_PRESETS`).

Each card folder is uploaded as a Hub repository with the code files and loads with `trust_remote_code=True`: its
`config.json` carries the `auto_map` that `RGNetForVideoGrounding.save_pretrained` writes (`AutoConfig` and
`AutoModel`). Only `config.json` is written: the code files come from the checkout (or the converter's output) at
upload, not from copies kept under `model_cards/`.

Usage:
    python scripts/make_preset_configs.py [--output_root model_cards]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from configuration_rgnet import RGNetConfig  # noqa: E402
from modeling_rgnet import RGNetForVideoGrounding  # noqa: E402
from scripts.cli import script_parser  # noqa: E402

# Model-card folder of each preset.
PRESET_FOLDERS = {
    "mad": "rgnet-mad",
    "ego4d-naq-pretrain": "rgnet-ego4d-naq-pretrain",
    "ego4d-nlq-finetune": "rgnet-ego4d",
}


def model_auto_map() -> dict[str, str]:
    """The `auto_map` of a saved `RGNetForVideoGrounding`: `{"AutoConfig": ..., "AutoModel": ...}`."""
    return {
        cls._auto_class: f"{cls.__module__.split('.')[-1]}.{cls.__name__}"
        for cls in (RGNetConfig, RGNetForVideoGrounding)
    }


def write_preset_configs(output_root: str | Path) -> list[Path]:
    """Save each preset's `RGNetConfig` as `<output_root>/<folder>/config.json`; returns the written paths."""
    written = []
    for preset, folder in PRESET_FOLDERS.items():
        config = RGNetConfig.from_preset(preset)
        config.auto_map = model_auto_map()
        path = Path(output_root) / folder / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # What `save_pretrained` writes, without the copy of configuration_rgnet.py it would put beside it.
        config.validate()
        config.to_json_file(path, use_diff=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--output_root", default=str(REPO_ROOT / "model_cards"))
    args = parser.parse_args(argv)
    for path in write_preset_configs(args.output_root):
        print(path)


if __name__ == "__main__":
    main()
