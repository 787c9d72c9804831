"""`python -m medfuse_core calibrate`: refit, on a trained checkpoint's own validation split, what sits on
top of the network, without retraining it: the per-label calibration and thresholds (train/calibrate.py)
the applicability domain per modality (train/domain_fit.py: fitted on the training split's encoder
outputs, thresholds on the validation split), and the conformal intervals (train/conformal_fit.py: on
another cohort than the calibration's, the project's validation cohort, so their scores are honest).

Why a separate step: the calibration of a shipped checkpoint (assets/demo_model) can be redone with a
better method in seconds from its training cohort, where retraining the network takes most of an hour.
The split is the checkpoint's own hash split (config.json `split`), so the validation patients are the
ones the training run validated on, never its training or test patients. What was done is recorded in
config.json as the command and the cohort's own description (generator, seed, n), never as a path of
the machine that ran it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medfuse_core.predictor import Predictor
from medfuse_core.problems import DataError
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import PATIENT_FILE, find_bundles, read_bundle
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.runtime.calibration import Calibration
from medfuse_core.runtime.uncertainty import MIN_ROWS
from medfuse_core.train.conformal_fit import DEFAULT_LEVEL, fit_checkpoint_intervals
from medfuse_core.train.domain_fit import DEFAULT_FALSE_ALARM_RATE, fit_checkpoint_domain
from medfuse_core.train.evaluate import fit_calibration
from medfuse_core.train.run import SplitConfig, read_cohort, split_of

COMMAND = "python -m medfuse_core calibrate --checkpoint CHECKPOINT --data COHORT"
DOMAIN_COMMAND = COMMAND + " --domain --false-alarm-rate {rate:g}"
INTERVALS_COMMAND = "python -m medfuse_core calibrate --checkpoint CHECKPOINT --intervals-data VALIDATION_COHORT"


def split_records(data_dir: str | Path, split: SplitConfig, part: str, progress: bool = True) -> list[PatientRecord]:
    """The readable bundles of one part ('train' | 'val' | 'test') of the checkpoint's hash split; only
    patient.json is read for the others."""
    records = []
    for folder in tqdm(find_bundles(Path(data_dir)), desc=f"reading the {part} split", disable=not progress, leave=False):
        try:
            patient_id = json.loads((folder / PATIENT_FILE).read_text(encoding="utf-8")).get("patient_id")
        except (OSError, json.JSONDecodeError, AttributeError):
            patient_id = None
        if patient_id is not None and split_of(str(patient_id), split) != part:
            continue
        try:
            record = read_bundle(folder)
        except DataError as exc:
            print(f"skipped: {exc}")
            continue
        if split_of(record.patient_id, split) == part:
            records.append(record)
    if not records:
        raise DataError(str(data_dir), "", f"expected patient bundles in the checkpoint's {part} split; found none")
    return records


def describe_cohort(data_dir: str | Path) -> dict[str, Any]:
    """What a cohort is, without its path: a synthetic cohort's generator, seed and size; else its folder name."""
    cohort_file = Path(data_dir) / "cohort.json"
    try:
        cohort = json.loads(cohort_file.read_text()) if cohort_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cohort = {}
    if "generator_version" in cohort:
        realism = cohort.get("realism")
        return {"synthetic": True, "generator": cohort["generator_version"], "seed": cohort.get("seed"), "n": cohort.get("n"),
                **({"realism": realism.get("name")} if isinstance(realism, dict) else {})}
    return {"synthetic": False, "folder_name": Path(data_dir).name}


def calibrate_checkpoint(checkpoint: str | Path, data_dir: str | Path | None, progress: bool = True, device: str = "cpu",
                         domain: bool = False, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                         intervals_data: str | Path | None = None, level: float = DEFAULT_LEVEL,
                         min_rows: int = MIN_ROWS) -> dict[str, Any]:
    """Refit the calibration of `checkpoint` on the validation split of `data_dir` (its training cohort)
    and, with `domain`, the applicability domain (training split fit, validation split thresholds); both
    written into the checkpoint folder; with `intervals_data` (every patient of another cohort), the
    conformal intervals at `level` (conformal.safetensors). The intervals stand on the model's scores
    before calibration, so they are refit alone when `data_dir` is None. Returns the new config.json."""
    if data_dir is None and (domain or intervals_data is None):
        raise ValueError("calibrate: expected --data (the training cohort) for the calibration and the domain, "
                         "or --intervals-data alone to refit the intervals")
    predictor = Predictor.load(checkpoint, device=device)
    config = {k: v for k, v in predictor.config.items() if k != "format_version"}
    if data_dir is not None:
        split = SplitConfig(**predictor.config["split"])
        cohort = describe_cohort(data_dir)
        val_records = split_records(data_dir, split, "val", progress)
        val_set, _ = predictor.featurizer.featurize_many(val_records, progress=progress)
        calibration = fit_calibration(predictor.model, val_set)
        calibration["fitted_on"] = {"split": "val", "patients": len(val_set), "cohort": cohort, "command": COMMAND}
        config["calibration"] = calibration
    if domain:
        train_set, _ = predictor.featurizer.featurize_many(split_records(data_dir, split, "train", progress), progress=progress)
        fitted = fit_checkpoint_domain(predictor.model, train_set, val_set, false_alarm_rate)
        fitted.fitted_on = {"fit": "train", "thresholds": "val", "patients": {"train": len(train_set), "val": len(val_set)},
                            "cohort": cohort, "command": DOMAIN_COMMAND.format(rate=false_alarm_rate)}
        config["domain"] = fitted.save(checkpoint)
    if intervals_data is not None:
        patients, _ = predictor.featurizer.featurize_many(read_cohort(intervals_data, progress), progress=progress)
        calibration = Calibration.from_config(config.get("calibration"), predictor.labels)
        intervals = fit_checkpoint_intervals(predictor.model, calibration, patients, level, min_rows)
        intervals.fitted_on = {"patients": len(patients), "cohort": describe_cohort(intervals_data),
                               "command": INTERVALS_COMMAND}
        config["uncertainty"] = intervals.save(checkpoint)
    ckpt.save_config(Path(checkpoint), config)
    return config
