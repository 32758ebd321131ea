"""Write the `config.json` of every published recipe preset under `model_cards/` (from `RGNET_PRESETS`).

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
from scripts.cli import script_parser  # noqa: E402

# Model-card folder of each preset.
PRESET_FOLDERS = {
    "mad": "rgnet-mad",
    "ego4d-naq-pretrain": "rgnet-ego4d-naq-pretrain",
    "ego4d-nlq-finetune": "rgnet-ego4d",
}


def write_preset_configs(output_root: str | Path) -> list[Path]:
    """Save each preset's `RGNetConfig` as `<output_root>/<folder>/config.json`; returns the written paths."""
    written = []
    for preset, folder in PRESET_FOLDERS.items():
        config = RGNetConfig.from_preset(preset)
        config.save_pretrained(Path(output_root) / folder)
        written.append(Path(output_root) / folder / "config.json")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--output_root", default=str(REPO_ROOT / "model_cards"))
    args = parser.parse_args(argv)
    for path in write_preset_configs(args.output_root):
        print(path)


if __name__ == "__main__":
    main()
