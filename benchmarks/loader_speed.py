"""Bundle-reader speed: per-patient time of `read_bundle` and of the labs / vitals table parsers.

Generates a synthetic cohort (default 100 patients, seed 5, 128 px films) into a temporary folder,
then times, per patient, `read_bundle(folder)` and `labs_from_table` / `vitals_from_table` on the
patient's already-read CSV tables (so the parse alone, without file reading; patients without the
file are left out of that measure, and labs + vitals is the per-patient sum). Each measurement runs
in a fresh subprocess; a run is a pass over all patients, and the reported median / p95 per patient
are the medians over `--repeats` runs (the machine may be shared).

With `--baseline-rev REV` (e.g. HEAD) or `--baseline-dir DIR`, the same is measured for the baseline
versions of medfuse_core/record.py, medfuse_core/sources/labs.py and medfuse_core/sources/vitals.py
(read with `git show`, or taken from DIR as record.py, labs.py, vitals.py), loaded from a temporary
copy of the package, with baseline and current runs alternated; the results hold both.
Writes benchmarks/results/loader_speed.json and loader_speed.md.

    python benchmarks/loader_speed.py [--n 100] [--seed 5] [--image-size 128] [--repeats 5]
                                      [--baseline-rev HEAD | --baseline-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from medfuse_core.provenance import write_benchmark_result
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MODULES = ("medfuse_core/record.py", "medfuse_core/sources/labs.py", "medfuse_core/sources/vitals.py")
MEASURES = ("labs_from_table", "vitals_from_table", "labs + vitals", "read_bundle")
TARGET_LABS_VITALS_MS = 25.0


# ---------------------------------------------------------------------------------------- worker


def _worker(cohort: Path) -> dict[str, list[float]]:
    """One pass over the cohort in this process: per-patient milliseconds for each measure."""
    from medfuse_core.sources.bundle import LABS_FILE, VITALS_FILE, find_bundles, read_bundle
    from medfuse_core.sources.csv_text import read_csv_text
    from medfuse_core.sources.labs import labs_from_table
    from medfuse_core.sources.vitals import vitals_from_table

    def table(path: Path):
        return read_csv_text(path, []) if path.is_file() else None

    folders = find_bundles(cohort)
    tables = [(f, table(f / LABS_FILE), table(f / VITALS_FILE)) for f in folders]
    read_bundle(folders[0])  # imports and caches warm
    labs_from_table(next(t[1] for t in tables if t[1] is not None), "warm")
    vitals_from_table(next(t[2] for t in tables if t[2] is not None), "warm")
    out: dict[str, list[float]] = {m: [] for m in MEASURES}
    for folder, labs, vitals in tables:
        both = 0.0
        if labs is not None:  # a patient without the file is left out of that measure
            start = time.perf_counter()
            labs_from_table(labs, str(folder / LABS_FILE))
            out["labs_from_table"].append((time.perf_counter() - start) * 1e3)
            both += out["labs_from_table"][-1]
        if vitals is not None:
            start = time.perf_counter()
            vitals_from_table(vitals, str(folder / VITALS_FILE))
            out["vitals_from_table"].append((time.perf_counter() - start) * 1e3)
            both += out["vitals_from_table"][-1]
        out["labs + vitals"].append(both)
        start = time.perf_counter()
        read_bundle(folder)
        out["read_bundle"].append((time.perf_counter() - start) * 1e3)
    import medfuse_core.record

    out["module"] = [str(Path(medfuse_core.record.__file__).resolve())]  # type: ignore[list-item]
    return out


# ---------------------------------------------------------------------------------------- driver


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _run(python_path: Path, cohort: Path) -> dict[str, list[float]]:
    env = dict(os.environ, PYTHONPATH=str(python_path))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(cohort)], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"benchmark run with PYTHONPATH={python_path} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = result.pop("module")[0]
    if not loaded.startswith(str(python_path.resolve())):
        raise RuntimeError(f"expected medfuse_core from {python_path}, the run imported {loaded}")
    return result


def _baseline_package(rev: str | None, folder: str | None, scratch: Path) -> Path:
    """A copy of the current package with the baseline versions of MODULES; returns its parent."""
    shutil.copytree(ROOT / "medfuse_core", scratch / "medfuse_core", ignore=shutil.ignore_patterns("__pycache__"))
    for module in MODULES:
        if rev is not None:
            text = subprocess.run(["git", "show", f"{rev}:{module}"], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout
        else:
            text = (Path(folder) / Path(module).name).read_text(encoding="utf-8")
        (scratch / module).write_text(text, encoding="utf-8")
    return scratch


def _summary(runs: list[dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for measure in MEASURES:
        medians = [statistics.median(r[measure]) for r in runs]
        p95s = [_p95(r[measure]) for r in runs]
        out[measure] = {
            "median_ms": round(statistics.median(medians), 3),
            "p95_ms": round(statistics.median(p95s), 3),
            "median_ms_per_run": [round(m, 3) for m in medians],
        }
    return out


def _markdown(result: dict) -> str:
    current = result["current"]
    baseline = result.get("baseline")
    lines = [
        "# Bundle reader speed",
        "",
        f"{result['patients']} synthetic patients (seed {result['seed']}, {result['image_size']} px films), "
        f"{result['repeats']} runs per version, each in a fresh process; per-patient median and p95 are the "
        f"medians over the runs. Labs / vitals: `labs_from_table` / `vitals_from_table` on the already-read "
        f"CSV tables; `read_bundle`: the whole folder (patient.json, CSVs, notes, images). Labs and vitals count "
        f"the patients that have the file; labs + vitals is their sum per patient.",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}, "
        f"pandas {result['machine']['pandas']}, numpy {result['machine']['numpy']}. "
        f"Measured {result['measured_at']}.",
        "",
    ]
    if baseline:
        lines += [
            f"Baseline: {result['baseline_source']}.",
            "",
            "| per patient | baseline median ms | baseline p95 ms | current median ms | current p95 ms | speed-up (median) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in MEASURES:
            b, c = baseline[m], current[m]
            lines.append(f"| {m} | {b['median_ms']:.1f} | {b['p95_ms']:.1f} | {c['median_ms']:.1f} | "
                         f"{c['p95_ms']:.1f} | {b['median_ms'] / c['median_ms']:.1f}x |")
    else:
        lines += ["| per patient | median ms | p95 ms |", "|---|---:|---:|"]
        for m in MEASURES:
            lines.append(f"| {m} | {current[m]['median_ms']:.1f} | {current[m]['p95_ms']:.1f} |")
    ok = current["labs + vitals"]["median_ms"] < TARGET_LABS_VITALS_MS
    lines += ["", f"Target: labs + vitals < {TARGET_LABS_VITALS_MS:g} ms per patient (median): "
              f"{'met' if ok else 'NOT met'}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-rev", help="git revision holding the baseline modules (e.g. HEAD)")
    baseline.add_argument("--baseline-dir", help="folder holding baseline record.py, labs.py, vitals.py")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(Path(args.worker))))
        return

    import numpy as np
    import pandas as pd

    from medfuse_core.sources.synth import generate_cohort

    scratch = Path(tempfile.mkdtemp(prefix="loader-speed-"))
    try:
        cohort = scratch / "cohort"
        generate_cohort(args.n, seed=args.seed, out_dir=cohort, image_size=args.image_size)
        versions = {"current": ROOT}
        source = None
        if args.baseline_rev or args.baseline_dir:
            versions = {"baseline": _baseline_package(args.baseline_rev, args.baseline_dir, scratch / "baseline"),
                        **versions}
            source = (f"git revision {args.baseline_rev}" if args.baseline_rev else f"modules in {args.baseline_dir}")
            source += f" ({', '.join(MODULES)})"
        runs: dict[str, list[dict]] = {v: [] for v in versions}
        for _ in range(args.repeats):
            for version, path in versions.items():  # alternated, so load changes hit both alike
                runs[version].append(_run(path, cohort))
        result = {
            "benchmark": "loader_speed",
            "patients": args.n,
            "seed": args.seed,
            "image_size": args.image_size,
            "repeats": args.repeats,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pandas": pd.__version__,
                        "numpy": np.__version__, "platform": platform.platform()},
            "target_labs_plus_vitals_ms": TARGET_LABS_VITALS_MS,
            **{version: _summary(r) for version, r in runs.items()},
        }
        if source:
            result["baseline_source"] = source
            result["speedup_median"] = {
                m: round(result["baseline"][m]["median_ms"] / result["current"][m]["median_ms"], 2) for m in MEASURES
            }
        write_benchmark_result(RESULTS, "loader_speed", result, _markdown(result))
        print(_markdown(result))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
