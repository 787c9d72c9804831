"""What risk over time costs per patient (medfuse_core/trajectory.py), warm, one thread.

For `--patients` held-out synthetic patients (`synth` seed 2000, image size 256), times
`risk_trajectory` (every cut-off featurised and predicted in one batch; sentence embeddings cached
after the first run), the minimum of `--repeats` runs per patient, and reports the median, the 90th
percentile and the number of cut-offs. Writes benchmarks/results/trajectory_cost.json and .md.

    python benchmarks/trajectory_cost.py --checkpoint assets/demo_model [--patients 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.provenance import portable_path, write_benchmark_result  # noqa: E402
from medfuse_core.sources.synth import generate_patient  # noqa: E402
from medfuse_core.trajectory import cutoffs, risk_trajectory  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    predictor = Predictor.load(args.checkpoint, device="cpu")
    records = [generate_patient(2000, i, image_size=256) for i in range(args.patients)]
    risk_trajectory(predictor, records[0])  # warm-up (first-use costs, not per patient)
    times, points = [], []
    for record in records:
        risk_trajectory(predictor, record)  # the embedding cache warm for this patient's sentences
        best = min(_timed(predictor, record) for _ in range(args.repeats))
        times.append(best)
        points.append(len(cutoffs(record, predictor.hours)))
    result = {"checkpoint": portable_path(args.checkpoint), "patients": args.patients, "repeats": args.repeats,
              "median_s": statistics.median(times), "p90_s": float(np.percentile(times, 90)),
              "max_s": max(times), "cutoffs_median": statistics.median(points), "threads": 1,
              "python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine()}
    md = ["# Risk over time: cost per patient", "",
          f"Checkpoint `{result['checkpoint']}`, {args.patients} held-out synthetic patients (synth seed 2000), warm, "
          f"1 thread, best of {args.repeats}. One patient's trajectory re-runs the model at "
          f"{result['cutoffs_median']:g} cut-offs (median) in one batch.", "",
          "| median | p90 | max |", "| ---: | ---: | ---: |",
          f"| {result['median_s']:.3f} s | {result['p90_s']:.3f} s | {result['max_s']:.3f} s |", "",
          "The dashboard computes it only when 'Risk over time' is switched on, and caches it per patient and "
          "checkpoint.", ""]
    write_benchmark_result(args.out_dir, "trajectory_cost", result, "\n".join(md))
    print("\n".join(md))
    return 0


def _timed(predictor, record) -> float:
    t = time.perf_counter()
    risk_trajectory(predictor, record)
    return time.perf_counter() - t


if __name__ == "__main__":
    raise SystemExit(main())
