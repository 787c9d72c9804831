"""Synthetic-cohort generation speed: patients per second, written to benchmarks/results/.

Generates a cohort of bundles (default 100 patients, 512 px films, as the CLI does) into a temporary
folder, once in one process and once with the default worker count, and writes synth_speed.json and
synth_speed.md. Requirement: >= 20 patients/s on a 2-core machine with the default settings.

    python benchmarks/synth_speed.py [--n 100] [--image-size 512] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from medfuse_core.sources.synth import GENERATOR_VERSION, generate_cohort, synthesize
from medfuse_core.sources.synth.cohort import worker_count
from medfuse_core.provenance import scrub_paths

RESULTS = Path(__file__).resolve().parent / "results"
REQUIRED_PATIENTS_PER_S = 20.0


def _in_memory(n: int, seed: int, image_size: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        synthesize(seed, i, image_size=image_size)
    return n / (time.perf_counter() - start)


def _to_disk(n: int, seed: int, image_size: int, workers: int | None) -> tuple[float, int]:
    scratch = Path(tempfile.mkdtemp(prefix="synth-speed-"))
    try:
        summary = generate_cohort(n, seed, scratch, image_size=image_size, workers=workers)
        size = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
        return summary.patients_per_s, size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    synthesize(args.seed, 0, image_size=64)  # imports and caches warm
    default_workers = worker_count(args.n, None)
    rows = [
        ("in memory, 1 process", 1, _in_memory(args.n, args.seed, args.image_size), None),
        ("bundles on disk, 1 process", 1, *_to_disk(args.n, args.seed, args.image_size, 1)),
        (f"bundles on disk, default ({default_workers} processes)", default_workers,
         *_to_disk(args.n, args.seed, args.image_size, None)),
    ]
    result = {
        "benchmark": "synth_speed",
        "generator_version": GENERATOR_VERSION,
        "n": args.n,
        "image_size": args.image_size,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "required_patients_per_s": REQUIRED_PATIENTS_PER_S,
        "runs": [{"setting": s, "workers": w, "patients_per_s": round(r, 2),
                  "mb_per_patient": None if size is None else round(size / args.n / 1e6, 3)} for s, w, r, size in rows],
    }
    result["default_patients_per_s"] = result["runs"][-1]["patients_per_s"]
    result["meets_requirement"] = result["default_patients_per_s"] >= REQUIRED_PATIENTS_PER_S
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synth_speed.json").write_text(scrub_paths(json.dumps(result, indent=2) + "\n"))
    lines = [
        f"# Synthetic cohort generation speed ({GENERATOR_VERSION})",
        "",
        f"{args.n} patients, {args.image_size} px films, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
        f"Requirement: >= {REQUIRED_PATIENTS_PER_S:g} patients/s with the default settings.",
        "",
        "| setting | processes | patients/s | MB per patient |",
        "| --- | ---: | ---: | ---: |",
    ]
    for run in result["runs"]:
        mb = "" if run["mb_per_patient"] is None else f"{run['mb_per_patient']:.3f}"
        lines.append(f"| {run['setting']} | {run['workers']} | {run['patients_per_s']:.1f} | {mb} |")
    lines += ["", f"Meets requirement: {'yes' if result['meets_requirement'] else 'NO'}", ""]
    (RESULTS / "synth_speed.md").write_text(scrub_paths("\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
