"""Quality: MedFuseLens against the baselines, same config, same splits, same seed, same held-out cohort.

For each variant (see medfuse_core/models/baselines.py) the run config (`--config`, default
assets/demo_run.json) is copied with `model.variant` set to the variant and written beside the
run folder as `<runs-dir>/<name>.json`; the run is trained with `medfuse_core.train.run.run_training`
(the `train` command's code: same hash split, same featurizer fitting, early stopping and
calibration on the validation split) and evaluated on the whole held-out cohort by the `eval`
command itself (`medfuse_core.cli.main(["eval", ...])`: bootstrap CIs, temperature and thresholds
from validation, the same figures with each modality withheld). A run folder that already holds a
resume point with the same run config resumes instead of starting over; `--fresh` starts over.

Columns of the table (diseases only, mortality apart, as in the eval report):
macro-AUROC and macro-AUPRC with the bootstrap 95% interval, micro-F1 at the validation thresholds,
mortality AUROC, ECE after the per-label calibration (all labels), and macro-AUROC with the image withheld
over the diseases whose route is not image-only (9 of the synthetic 10) and with the notes withheld
over the diseases whose route is not notes-only (9 of 10). Routes come from the synthetic cohort's
`DISEASES`; labels it does not know count as neither (all diseases are then used).
Writes <out-dir>/<name>.json and <name>.md (`--name`, default quality: the clean track; the realistic
track, on `synth --realism ward` cohorts, is written as quality_ward).

`--encoders DIR` (a run folder's `encoders/`, written by training stage 1) gives every variant the
same pretrained encoders: the folder is copied into each run folder, so stage 1 is skipped and the
variants differ only in what comes after the encoders. This is the fair comparison of the fusion
designs, and it makes the benchmark a matter of minutes on a CPU.

    python benchmarks/quality.py --data TRAIN_DIR --heldout DIR [--out-dir benchmarks/results]
        [--runs-dir runs/quality] [--epochs N] [--config assets/demo_run.json] [--variants a,b,...]
        [--bootstrap 200] [--device auto] [--fresh] [--encoders RUN_DIR/encoders]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medfuse_core import cli  # noqa: E402
from medfuse_core.models.baselines import VARIANTS  # noqa: E402
from medfuse_core.sources.synth.diseases import DISEASES, MORTALITY  # noqa: E402
from medfuse_core.train.run import RunConfig, SplitConfig, prepare_data, run_training  # noqa: E402
from medfuse_core.provenance import cohort_command, write_benchmark_result  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CONFIG = ROOT / "assets" / "demo_run.json"
ROUTE = {d.name: d.route for d in DISEASES}
# the table's order: ours first, then its ablation, the fusion baselines, the single modalities
ORDER = ("medfuse_lens", "no_mi", "early_fusion", "late_fusion", "medfuse_lstm",
         "single:labs", "single:notes", "single:vitals", "single:image")
assert set(ORDER) == set(VARIANTS)


def folder_name(variant: str) -> str:
    return variant.replace(":", "-")


def variant_run_config(base: dict[str, Any], variant: str) -> dict[str, Any]:
    config = json.loads(json.dumps(base))
    config.setdefault("model", {})["variant"] = variant
    return config


def _macro(per_label: dict[str, Any], names: list[str]) -> float:
    values = [per_label[n]["auroc"] for n in names if per_label[n]["auroc"] is not None and math.isfinite(per_label[n]["auroc"])]
    return float(sum(values) / len(values)) if values else float("nan")


def withheld_auroc(report: dict[str, Any], modality: str) -> tuple[float, float, list[str]]:
    """Macro-AUROC with `modality` withheld and with every modality given, both over the diseases
    whose route is not `modality` alone (the issue's "falls by at most 0.02" compares these two)."""
    per_label = report["subsets"][f"without:{modality}"]["per_label"]
    names = [n for n in per_label if n != MORTALITY and ROUTE.get(n) != modality]
    return _macro(per_label, names), _macro(report["per_label"], names), names


def summarise(variant: str, report: dict[str, Any], run_config: dict[str, Any], seconds: float) -> dict[str, Any]:
    without_image, with_image, image_names = withheld_auroc(report, "image")
    without_notes, with_notes, note_names = withheld_auroc(report, "notes")
    summary = run_config.get("summary") or {}
    return {
        "variant": variant,
        "macro_auroc": report["macro_auroc"], "macro_auroc_ci95": report["ci95"]["macro_auroc"],
        "macro_auprc": report["macro_auprc"], "macro_auprc_ci95": report["ci95"]["macro_auprc"],
        "micro_f1": report["micro_f1"],
        "mortality_auroc": (report.get("mortality") or {}).get("auroc", float("nan")),
        "ece_calibrated": report["ece"]["calibrated"],
        "macro_auroc_without_image": without_image, "n_diseases_without_image": len(image_names),
        "drop_without_image": with_image - without_image,
        "macro_auroc_without_notes": without_notes, "n_diseases_without_notes": len(note_names),
        "drop_without_notes": with_notes - without_notes,
        "n_heldout": report["n_patients"],
        "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
        "best_val_macro_auprc": summary.get("best_val_macro_auprc"), "parameters": summary.get("parameters"),
        "train_eval_seconds": round(seconds, 1),
    }


def run_variant(variant: str, args: argparse.Namespace, base: dict[str, Any], prepared=None) -> dict[str, Any]:
    run_dir = args.runs_dir / folder_name(variant)
    config_file = args.runs_dir / f"{folder_name(variant)}.json"
    config = variant_run_config(base, variant)
    if run_dir.exists():
        same = config_file.is_file() and json.loads(config_file.read_text()) == config
        if args.fresh or not same:
            if not args.fresh:
                raise SystemExit(f"{run_dir} holds a run of another config; pass --fresh to start it over")
            shutil.rmtree(run_dir)
    config_file.write_text(json.dumps(config, indent=1) + "\n")
    if args.encoders is not None and not (run_dir / "encoders").exists():
        shutil.copytree(args.encoders, run_dir / "encoders")
    overrides: dict[str, Any] = {"progress": not args.quiet}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.device is not None:
        overrides["device"] = args.device
    started = time.perf_counter()
    run_training(args.data, run_dir, config_file, overrides, prepared=prepared)
    report_file = args.runs_dir / f"{folder_name(variant)}.eval.json"
    argv = ["eval", "--checkpoint", str(run_dir), "--data", str(args.heldout), "--out", str(report_file),
            "--bootstrap", str(args.bootstrap), "--device", args.device or "auto"]
    if cli.main(argv + (["--quiet"] if args.quiet else [])) != 0:
        raise SystemExit(f"eval of {variant} failed")
    seconds = time.perf_counter() - started
    report = json.loads(report_file.read_text())
    run_config = json.loads((run_dir / "config.json").read_text())
    return summarise(variant, report, run_config, seconds)


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _ci(value: float, ci: list[float]) -> str:
    return f"{_f(value)} [{_f(ci[0])}, {_f(ci[1])}]"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    rows = results["variants"]
    n_img = rows[0]["n_diseases_without_image"] if rows else 0
    n_note = rows[0]["n_diseases_without_notes"] if rows else 0
    lines = [
        "# Quality: MedFuseLens and the baselines",
        "",
        f"Trained on `{meta['data']}` (config `{meta['config']}`{', epochs ' + str(meta['epochs']) if meta['epochs'] else ''}, "
        f"same hash split and seed for every variant), evaluated on the held-out `{meta['heldout']}` "
        f"({rows[0]['n_heldout'] if rows else 0} patients) by the `eval` command. {meta['date']}, {meta['platform']}, "
        f"torch {meta['torch']}.",
        "",
        *([f"Cohorts: training `{meta['data_made_by']}`, held-out `{meta['heldout_made_by']}`"
           + (" (the realistic track: sources/synth/realism.py)" if "--realism ward" in str(meta.get("heldout_made_by")) else "")
           + ".", ""] if meta.get("heldout_made_by") else []),
        *([f"Every variant starts from the stage-1 encoders in `{meta['shared_encoders']}` (stage 1 skipped"
           + (f"; they are those of `{meta['encoders_from']}`, taken by `train --encoders-from`"
              if meta.get("encoders_from") else "") + ")"
           + (f"; the film encoder among them also saw the films of `{meta['encoder_films']}` "
              "(`train --image-encoder-data`)" if meta.get("encoder_films") else "") + ".", ""]
          if meta.get("shared_encoders") else []),
        "Macro figures over the diseases (mortality apart); 95% bootstrap intervals over patients "
        f"({meta['bootstrap']} resamples). ECE after the per-label calibration fitted on validation, all labels. 'no image' / 'no notes': "
        f"macro-AUROC with that modality withheld from every patient, over the {n_img} diseases whose route is "
        f"not image-only / the {n_note} whose route is not notes-only; in brackets the drop from the same "
        "diseases' macro-AUROC with every modality given.",
        "",
        "| variant | macro-AUROC [95% CI] | macro-AUPRC [95% CI] | micro-F1 | mortality AUROC | ECE (calibrated) "
        "| AUROC, no image (drop) | AUROC, no notes (drop) | best epoch | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        best = "n/a" if r["best_epoch"] is None else f"{r['best_epoch'] + 1}/{r['epochs_run']}"
        lines.append(
            f"| {r['variant']} | {_ci(r['macro_auroc'], r['macro_auroc_ci95'])} | {_ci(r['macro_auprc'], r['macro_auprc_ci95'])} "
            f"| {_f(r['micro_f1'])} | {_f(r['mortality_auroc'])} | {_f(r['ece_calibrated'])} "
            f"| {_f(r['macro_auroc_without_image'])} ({_f(r.get('drop_without_image'))}) "
            f"| {_f(r['macro_auroc_without_notes'])} ({_f(r.get('drop_without_notes'))}) | {best} "
            f"| {r['parameters'] if r['parameters'] is not None else 'n/a'} |")
    lines += ["", "Variants: `medfuse_lens` the model; `no_mi` it without any disentanglement loss (InfoNCE, vCLUB, consensus, decorrelation, shared-aux, parsimony); "
              "`early_fusion` concatenated encoder features + presence -> MLP; `late_fusion` per-modality heads "
              "averaged over the modalities present; `medfuse_lstm` MedFuse's LSTM over the present modalities; "
              "`single:<m>` one encoder (bias only without it). All share the encoders and their config; see "
              "medfuse_core/models/baselines.py.", ""]
    return "\n".join(lines)


def encoder_films(encoders: Path | None) -> str | None:
    """The extra film cohort the shared encoders' run gave its image encoder, from that run's config.json
    (or from the data of the run it took its encoders from, `train --encoders-from`)."""
    data = _encoder_run_data(encoders)
    films = data.get("image_encoder_data") or (data.get("encoders_from") or {}).get("data", {}).get("image_encoder_data")
    return films["path"] if films else None


def encoders_origin(encoders: Path | None) -> str | None:
    """The run the shared encoders were taken from, when their run took them from another (`--encoders-from`)."""
    origin = _encoder_run_data(encoders).get("encoders_from")
    return origin.get("checkpoint") if origin else None


def _encoder_run_data(encoders: Path | None) -> dict[str, Any]:
    config = Path(encoders).parent / "config.json" if encoders else None
    if config is None or not config.is_file():
        return {}
    return json.loads(config.read_text()).get("data", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="training cohort (split into train/val/test by hash)")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out cohort every variant is evaluated on")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "quality", help="run folders (checkpoints)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--epochs", type=int, default=None, help="override the config's train.epochs")
    parser.add_argument("--variants", default=",".join(ORDER), help="comma-separated subset of " + ", ".join(ORDER))
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--device", default=None)
    parser.add_argument("--fresh", action="store_true", help="start existing run folders over")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the table from the eval reports already in --runs-dir (no training)")
    parser.add_argument("--name", default="quality", help="results file stem (quality_ward for the realistic track)")
    parser.add_argument("--encoders", type=Path, default=None,
                        help="stage-1 encoders folder shared by every variant (e.g. runs/demo/encoders)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ORDER]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected some of {', '.join(ORDER)}")
    base = json.loads(args.config.read_text())
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    import torch

    results: dict[str, Any] = {"meta": {
        "data": str(args.data), "heldout": str(args.heldout), "config": str(args.config), "epochs": args.epochs,
        "data_made_by": cohort_command(args.data), "heldout_made_by": cohort_command(args.heldout),
        "bootstrap": args.bootstrap, "date": time.strftime("%Y-%m-%d"), "platform": platform.platform(),
        "torch": torch.__version__, "runs_dir": str(args.runs_dir), "run_config": base,
        "shared_encoders": str(args.encoders) if args.encoders else None,
        "encoder_films": encoder_films(args.encoders), "encoders_from": encoders_origin(args.encoders),
    }, "variants": []}
    if args.report_only:
        for variant in [v for v in ORDER if v in variants]:
            report = json.loads((args.runs_dir / f"{folder_name(variant)}.eval.json").read_text())
            run_config = json.loads((args.runs_dir / folder_name(variant) / "config.json").read_text())
            results["variants"].append(summarise(variant, report, run_config, float("nan")))
        write_benchmark_result(args.out_dir, args.name, results, markdown(results))
        return 0
    # read and featurized once: every variant has the same split and features (the variant is not read here)
    run = RunConfig(**base)
    prepared = prepare_data(args.data, run, SplitConfig(**run.split), progress=not args.quiet)
    for variant in [v for v in ORDER if v in variants]:
        print(f"== {variant}", flush=True)
        results["variants"].append(run_variant(variant, args, base, prepared))
        # written after every variant, so an interrupted benchmark keeps what it has
        write_benchmark_result(args.out_dir, args.name, results, markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
