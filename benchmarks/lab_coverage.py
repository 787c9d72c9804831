"""How many lab results of real-shaped bundles the demo model reads (a quality count, not a timing).

For each bundle of tests/data/real_shape/ (an eICU stay, a Synthea patient), counts the lab rows inside
the model's window (index time .. + hours) and how many of them the demo checkpoint reads: a number,
usable (`not_used` empty, where the code has that column) and an item its lab vocabulary knows. Relative
times are made absolute first (in a temporary copy), so code without relative-time support reads the
same rows.

Run it with the code under test on PYTHONPATH; `--label` names the row written, e.g. before / after:

    git archive main | tar -x -C /tmp/lens-main
    PYTHONPATH=/tmp/lens-main python benchmarks/lab_coverage.py --label before
    PYTHONPATH=$PWD python benchmarks/lab_coverage.py --label after

Results are merged into benchmarks/results/lab_coverage.json and .md (one row per label and bundle).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "tests" / "data" / "real_shape"
RESULTS = ROOT / "benchmarks" / "results"


def _absolute_copy(bundle: Path, out: Path) -> Path:
    """`bundle` copied with `offset_minutes` turned into ISO `time` (index_time + offset)."""
    target = out / bundle.name
    shutil.copytree(bundle, target)
    meta = json.loads((bundle / "patient.json").read_text())
    index = pd.Timestamp(meta["index_time"])
    for name in ("labs.csv", "vitals.csv"):
        path = target / name
        if not path.is_file():
            continue
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "offset_minutes" in table.columns:
            minutes = pd.to_numeric(table.pop("offset_minutes"))
            table.insert(0, "time", (index + pd.to_timedelta(minutes, unit="min")).dt.strftime("%Y-%m-%d %H:%M:%S"))
            table.to_csv(path, index=False)
    return target


def count(bundle: Path, checkpoint: Path) -> dict[str, int]:
    from medfuse_core.features.labs import LabVocabulary
    from medfuse_core.sources.bundle import read_bundle

    config = json.loads((checkpoint / "config.json").read_text())
    vocabulary = LabVocabulary.from_dict(config["features"]["lab_vocabulary"])
    hours = float(config["features"].get("hours", 48.0))
    record = read_bundle(bundle)
    table = record.labs.table
    start = pd.Timestamp(record.index_time)
    in_window = ((table["time"] >= start) & (table["time"] <= start + pd.Timedelta(hours=hours))).to_numpy()
    numeric = table["value"].notna().to_numpy()
    usable = (table["not_used"] == "").to_numpy() if "not_used" in table else np.ones(len(table), dtype=bool)
    known = vocabulary.ids_of(table["itemid"], table["item"]) > 0
    read = in_window & numeric & usable & known
    warnings = [p for p in record.problems if p.file.endswith("labs.csv")]
    return {"rows": int(len(table)), "in_window": int(in_window.sum()), "read_by_model": int(read.sum()),
            "tests_read": int(len(set(vocabulary.ids_of(table["itemid"][read], table["item"][read])))),
            "labs_warnings": len(warnings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "assets" / "demo_model")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "lab_coverage.json"
    results = json.loads(out_json.read_text()) if out_json.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in sorted(p for p in BUNDLES.iterdir() if (p / "patient.json").is_file()):
            results.setdefault(bundle.name, {})[args.label] = count(_absolute_copy(bundle, Path(tmp)), args.checkpoint)
    out_json.write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Lab results the demo model reads on real-shaped bundles", "",
             "`python benchmarks/lab_coverage.py --label LABEL` with the code under test on PYTHONPATH "
             "(see the script). Rows: lab rows in labs.csv; in window: inside index time .. + 48 h; read: "
             "numeric, usable and known to the demo checkpoint's lab vocabulary.", "",
             "| bundle | code | rows | in window | read by the model | distinct tests read | labs.csv warnings |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for bundle, by_label in results.items():
        for label, c in by_label.items():
            lines.append(f"| {bundle} | {label} | {c['rows']} | {c['in_window']} | {c['read_by_model']} | "
                         f"{c['tests_read']} | {c['labs_warnings']} |")
    (RESULTS / "lab_coverage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
