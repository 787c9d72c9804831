"""Sweep of the disentanglement loss weights: one fusion checkpoint per setting, same encoders.

Each setting is the run config (`--config`, default assets/demo_run.json) with its `train.loss`
entries replaced; every run reuses the stage-1 encoders of `--encoders` (copied into its folder) and
the cohort is read and featurized once for all of them, so a setting costs one stage-2 training.
The checkpoints are listed in `<runs-dir>/sweep.json`, the input of
`benchmarks/faithfulness.py --sweep-json`, which scores the route-accuracy pair of each: the curve
DESIGN.md's "Known trap" asks for.

    python benchmarks/disentanglement_sweep.py --data TRAIN_DIR --encoders runs/demo/encoders \
        --runs-dir runs/sweep [--settings "name1;name2"]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medfuse_core.train.objective import DISENTANGLEMENT_WEIGHTS  # noqa: E402
from medfuse_core.train.run import RunConfig, SplitConfig, prepare_data, run_training  # noqa: E402

OFF = {weight: 0.0 for weight in DISENTANGLEMENT_WEIGHTS}
# name -> entries over the run config's (loss weights; "head" and the TRAIN_KEYS go to their own sections);
# from "nothing" to the demo's setting and past it, with the demo's additive head unless "head" says otherwise
SETTINGS: dict[str, dict[str, Any]] = {
    "no_disentanglement": {**OFF, "shared_token_dropout": 0.0},
    # None: the shared token is dropped as often as the specific ones (MEDFuse's losses as published)
    "infonce+vclub": {**OFF, "infonce_weight": 0.1, "vclub_weight": 0.1, "shared_token_dropout": None},
    "infonce+vclub, shared token always kept": {**OFF, "infonce_weight": 0.1, "vclub_weight": 0.1,
                                                "shared_token_dropout": 0.0},
    "+consensus+decorrelation": {**OFF, "infonce_weight": 0.1, "vclub_weight": 0.1, "consensus_weight": 5.0,
                                 "decorrelation_weight": 1.0, "shared_token_dropout": 0.0},
    "+shared_aux 0.5, parsimony 0": {"parsimony_weight": 0.0},
    "+shared_aux 0.5 +parsimony 0.05": {"parsimony_weight": 0.05},
    "+shared_aux 0.5 +parsimony 0.1 (demo)": {},  # the run config as it is
    "+shared_aux 0.5 +parsimony 0.2": {"parsimony_weight": 0.2},
    # the previous design: the demo's losses with attention across the tokens instead of a sum of terms
    "demo losses, transformer head": {"head": "transformer"},
    # the demo's setting with other stage-2 seeds (same encoders, same initial weights, same split): how
    # far the pair moves with the seed alone
    **{f"demo setting, fusion seed {seed}": {"fusion_seed": seed} for seed in range(1, 5)},
    # the demo's setting with the best epoch chosen from epoch 0 (the previous release's rule), seeds 0-2
    **{f"demo setting, selection from epoch 0, fusion seed {seed}": {"selection_start": 0, "fusion_seed": seed}
       for seed in range(3)},
    **{f"demo losses, transformer head, fusion seed {seed}": {"head": "transformer", "fusion_seed": seed}
       for seed in range(1, 3)},
}
TRAIN_KEYS = ("seed", "fusion_seed", "selection_start")  # setting entries that go to the run config's "train" section, not "train.loss"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoders", type=Path, required=True, help="a run folder's encoders/ (training stage 1)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "sweep")
    parser.add_argument("--config", type=Path, default=ROOT / "assets" / "demo_run.json")
    parser.add_argument("--settings", default=None, help="';'-separated subset of: " + "; ".join(SETTINGS))
    args = parser.parse_args(argv)
    names = list(SETTINGS) if args.settings is None else [n.strip() for n in args.settings.split(";")]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {unknown}")
    base = json.loads(args.config.read_text())
    run = RunConfig(**base)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_data(args.data, run, SplitConfig(**run.split), progress=False)
    listing_file = args.runs_dir / "sweep.json"
    # a rerun of some settings keeps the others' entries
    listing = json.loads(listing_file.read_text()) if listing_file.is_file() else []
    for name in names:
        folder = args.runs_dir / slug(name)
        config = json.loads(json.dumps(base))
        setting = SETTINGS[name]
        config["train"].setdefault("loss", {}).update({k: v for k, v in setting.items() if k not in TRAIN_KEYS + ("head",)})
        if "head" in setting:
            config["model"].setdefault("fusion", {})["head"] = setting["head"]
        config["train"].update({k: v for k, v in setting.items() if k in TRAIN_KEYS})
        config["train"]["progress"] = False
        config_file = args.runs_dir / f"{slug(name)}.json"
        config_file.write_text(json.dumps(config, indent=1) + "\n")
        if not (folder / "encoders").exists():
            shutil.copytree(args.encoders, folder / "encoders")
        started = time.perf_counter()
        result = run_training(args.data, folder, config_file, prepared=prepared)
        print(f"{name}: best epoch {result.best_epoch + 1}, val macro-AUPRC {result.best_val_macro_auprc:.4f} "
              f"[{time.perf_counter() - started:.0f} s]", flush=True)
        listing = [e for e in listing if e["name"] != name]
        listing.append({"name": name, "checkpoint": str(folder), "loss": config["train"]["loss"]})
        listing_file.write_text(json.dumps(listing, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
