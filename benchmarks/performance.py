"""Performance: per-patient latency, cohort scoring, training throughput, and the MedFuse reference side by side.

Sections (`--sections`, default all):

- latency: the checkpoint on `--data` patients that have all four modalities, and the same patients
  with modalities withheld (labs+notes+vitals, labs+vitals, labs only), warm, batch of one, each
  patient's time the minimum of `--repeats`:
    predict   = `Predictor.predict([record])` (featurize with the embedding cache warm + forward);
    + groups  = `explain(record, predictor, evidence=False)`: predict + exact group Shapley values, all labels;
    review    = `explain(record, predictor, [label])`: + the four Captum evidence maps for one disease,
                with the CLI's defaults (64 IG steps for the vitals; labs and sentences at most 32, the
                film at most 16; word attributions for the top 3 sentences, 16 steps, in one batch);
    review (page) = the same as the review page runs it (`app.scoring.explain_panels`: 24 steps, no words).
- scoring: `python -m medfuse_core score` on `--cohort` folders (e.g. 1k and 20k patients) as a
  subprocess: a cold pass (empty embedding cache) on the first, then a warm pass on each, in a
  fresh cache folder; wall time, patients/s, and the peak resident memory of the process tree
  (the command and its DataLoader workers, sampled from /proc every 0.1 s).
- training: one epoch of `medfuse_core.train.loop.train` on `--train-patients` patients of the first
  cohort, end to end (every encoder trained) and on frozen, cached encoders (training stage 2);
  patients/s over the epoch, validation included. On CUDA, the model FLOPs utilisation of the end-to-end
  step against the card's measured bf16 matmul rate.
- reference: our model and `MedFuseReference` (MedFuse: LSTM 2x256 + ResNet-34 on 3x224x224 + fusion
  LSTM) on the same patients, same batch size, same device, in one run: inference forward and a
  training step (forward + backward + AdamW) per patient, and their ratio.
- captum: `benchmarks/group_attribution_speed.py` run as a subprocess (exact batched Shapley vs
  per-label Captum ShapleyValues); its ratio is copied here.

Threads: `--threads` (default 1: on a shared 2-core machine one thread is the fastest for one
patient). Writes benchmarks/results/performance.json and performance.md.

    python benchmarks/performance.py --checkpoint assets/demo_model --data HELDOUT
        --cohort data/cohort1k --cohort data/cohort20k [--sections latency,scoring,training,reference,captum]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.explain import explain  # noqa: E402
from medfuse_core.features.batch import collate  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.record import Labs, PatientRecord, Vitals  # noqa: E402
from medfuse_core.sources.bundle import find_bundles, read_bundle  # noqa: E402
from medfuse_core.provenance import write_benchmark_result
from timing import latency_stats, timed  # noqa: E402  (benchmarks/timing.py)

SECTIONS = ("latency", "scoring", "training", "reference", "captum")
MODALITY_SETS = {
    "labs+notes+vitals+image": ("labs", "notes", "vitals", "image"),
    "labs+notes+vitals": ("labs", "notes", "vitals"),
    "labs+vitals": ("labs", "vitals"),
    "labs": ("labs",),
}
TARGETS = {"review_goal_p50_s": 0.75, "review_p50_s": 1.5, "predict_p50_s": 0.100, "scoring_patients_per_s": 50.0, "gpu_review_p50_s": 0.100}


# ------------------------------------------------------------------------------------------ helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def keep_modalities(record: PatientRecord, keep: tuple[str, ...]) -> PatientRecord:
    """The record with every modality not in `keep` emptied (absent, as in a record that never had it)."""
    return dataclasses.replace(
        record,
        labs=record.labs if "labs" in keep else Labs(),
        vitals=record.vitals if "vitals" in keep else Vitals(),
        notes=record.notes if "notes" in keep else [],
        images=record.images if "image" in keep else [],
    )


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (0 once it is gone)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_with_peak_memory(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS of the process tree in bytes, combined output) of a command."""
    peak = 0
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    reader.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{''.join(output)[-3000:]}")
    return wall, peak, "".join(output)


# ------------------------------------------------------------------------------------------ sections


def latency(predictor: Predictor, records: list[PatientRecord], repeats: int) -> dict[str, Any]:
    from app.scoring import explain_panels

    device = predictor.device
    out: dict[str, Any] = {}
    # the disease whose evidence the review shows: each patient's highest-risk one, as the page opens it
    diseases = [p.labels[int(p.probabilities[:-1].argmax())] for p in predictor.predict(records)]
    for name, keep in MODALITY_SETS.items():
        subset = [keep_modalities(r, keep) for r in records]
        calls = {
            "predict": lambda r, d: predictor.predict([r]),
            "predict_groups": lambda r, d: explain(r, predictor, evidence=False),
            "review": lambda r, d: explain(r, predictor, [d]),
            "review_page": lambda r, d: explain_panels(r, predictor, d),
        }
        for call in calls.values():  # warm-up: embeddings cached, Captum and the allocator warm
            call(subset[0], diseases[0])
        row = {}
        for what, call in calls.items():
            times = [min(timed(lambda: (call(r, d), _sync(device)))[0] for _ in range(repeats))
                     for r, d in zip(subset, diseases)]
            row[what] = latency_stats(times)
        # what the Captum evidence maps cost of the review: the review minus predict + groups (same patients)
        row["evidence_share_of_review"] = 1.0 - row["predict_groups"]["p50_s"] / row["review"]["p50_s"]
        row["evidence_share_of_review_page"] = 1.0 - row["predict_groups"]["p50_s"] / row["review_page"]["p50_s"]
        out[name] = row
        print(f"latency {name}: " + ", ".join(f"{k} {v['p50_s'] * 1000:.0f} ms" for k, v in row.items() if isinstance(v, dict)), flush=True)
    return out


def scoring(checkpoint: str, cohorts: list[Path], batch_size: int, workers: int, device: str,
            threads: int) -> list[dict[str, Any]]:
    cache = Path(tempfile.mkdtemp(prefix="perf-cache-"))
    env = {**os.environ, "MEDFUSE_LENS_HOME": str(cache), "OMP_NUM_THREADS": str(threads)}
    runs = []
    passes = [(cohorts[0], "cold")] + [(c, "warm") for c in cohorts]
    for cohort, state in passes:
        n = len(find_bundles(cohort))
        with tempfile.TemporaryDirectory() as scratch:
            argv = [sys.executable, "-m", "medfuse_core", "score", "--checkpoint", checkpoint, "--data", str(cohort),
                    "--out", str(Path(scratch) / "preds.parquet"), "--batch-size", str(batch_size),
                    "--workers", str(workers), "--device", device, "--quiet"]
            wall, peak, output = run_with_peak_memory(argv, env)
        run = {"cohort": str(cohort), "patients": n, "cache": state, "wall_s": wall, "patients_per_s": n / wall,
               "peak_rss_mb": peak / 2**20, "summary": output.strip().splitlines()[-1] if output.strip() else ""}
        runs.append(run)
        print(f"scoring {n} patients ({state} cache): {run['patients_per_s']:.1f}/s, peak {run['peak_rss_mb']:.0f} MB",
              flush=True)
    return runs


def training(checkpoint: str, cohort: Path, n_patients: int, device: str, batch_size: int | None = None) -> dict[str, Any]:
    """`batch_size`: instead of the checkpoint's training batch (a GPU is filled by larger ones)."""
    from medfuse_core.models.baselines import build_model
    from medfuse_core.models.config import ModelConfig
    from medfuse_core.train.loop import TrainConfig, train

    predictor = Predictor.load(checkpoint, device=device)
    config = predictor.config  # read_config's: an older checkpoint's model.loss is already train.loss
    records = [read_bundle(b) for b in find_bundles(cohort)[:n_patients]]
    features, _ = predictor.featurize(records)
    n_val = max(1, n_patients // 8)
    train_set, val_set = features[n_val:], features[:n_val]
    out: dict[str, Any] = {"train_patients": len(train_set), "val_patients": len(val_set)}
    for mode, freeze in (("end_to_end", False), ("stage2_cached_encoders", True)):
        model = build_model(ModelConfig.from_dict(config["model"]))
        model.load_state_dict(predictor.model.state_dict())
        train_config = TrainConfig.from_dict({**config.get("train", {}), "epochs": 1, "encoder_epochs": 0,
                                              "freeze_encoders": freeze, "progress": False, "device": device,
                                              **({"batch_size": batch_size} if batch_size else {})})
        with tempfile.TemporaryDirectory() as run_dir:
            result = train(model, train_set, val_set, train_config, Path(run_dir))
        seconds = result.history[-1].seconds
        out[mode] = {"epoch_s": seconds, "patients_per_s": len(train_set) / seconds, "batch_size": train_config.batch_size}
        print(f"training {mode}: {len(train_set) / seconds:.1f} patients/s", flush=True)
    return out


def reference(predictor: Predictor, records: list[PatientRecord], batch_size: int, repeats: int) -> dict[str, Any]:
    from torch.nn import functional as F

    from medfuse_core.models.medfuse_reference import REFERENCE_IMAGE_SIZE, MedFuseReference

    device = predictor.device
    features, _ = predictor.featurize(records[:batch_size])
    batch = collate(features).to(device)
    ours = predictor.model
    ref = MedFuseReference(n_labels=len(predictor.labels)).to(device)
    image = F.interpolate(batch.image, size=(REFERENCE_IMAGE_SIZE, REFERENCE_IMAGE_SIZE), mode="bilinear",
                          align_corners=False).expand(-1, 3, -1, -1).contiguous()
    has_image = batch.present[:, 3].clone()
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    no_image = batch.present.clone()
    no_image[:, 3] = False

    def ours_forward():
        with torch.inference_mode(), torch.autocast(**autocast):
            ours(batch)

    def ref_forward():
        with torch.inference_mode(), torch.autocast(**autocast):
            ref(batch.vitals, image, has_image)

    def ours_forward_no_image():
        with torch.inference_mode(), torch.autocast(**autocast):
            ours(batch, present=no_image)

    def ref_forward_no_image():
        with torch.inference_mode(), torch.autocast(**autocast):
            ref(batch.vitals, image, torch.zeros_like(has_image))

    def step(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def run() -> None:
            model.train()
            with torch.autocast(**autocast):
                logits = forward()
                loss = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(batch.labels))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run

    ours_state = {k: v.clone() for k, v in ours.state_dict().items()}
    ours_train = step(ours, lambda: ours(batch).logits)
    ref_train = step(ref, lambda: ref(batch.vitals, image, has_image))
    timings = {}
    for name, fn in (("ours_forward", ours_forward), ("reference_forward", ref_forward),
                     ("ours_forward_no_image", ours_forward_no_image), ("reference_forward_no_image", ref_forward_no_image),
                     ("ours_train_step", ours_train), ("reference_train_step", ref_train)):
        fn()  # warm-up
        _sync(device)
        times = []
        for _ in range(repeats):
            times.append(timed(lambda: (fn(), _sync(device)))[0])
        timings[name] = min(times) / len(features)
    ours.load_state_dict(ours_state)
    ours.eval()
    out = {
        "batch_size": len(features),
        "with_image": int(has_image.sum()),
        "ours_parameters": sum(p.numel() for p in ours.parameters()),
        "reference_parameters": sum(p.numel() for p in ref.parameters()),
        "per_patient_s": timings,
        "forward_ratio": timings["ours_forward"] / timings["reference_forward"],
        "forward_no_image_ratio": timings["ours_forward_no_image"] / timings["reference_forward_no_image"],
        "train_step_ratio": timings["ours_train_step"] / timings["reference_train_step"],
    }
    print(f"reference: forward ratio {out['forward_ratio']:.2f}, train step ratio {out['train_step_ratio']:.2f}", flush=True)
    return out


def captum(threads: int) -> dict[str, Any]:
    argv = [sys.executable, str(ROOT / "benchmarks" / "group_attribution_speed.py"), "--patients", "20",
            "--naive-patients", "3", "--threads", str(threads)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((RESULTS / "group_attribution.json").read_text())
    return {"source": "benchmarks/results/group_attribution.json", **{k: result[k] for k in result if k in (
        "exact", "naive", "speedup_p50", "max_abs_difference", "measured")}}


# ------------------------------------------------------------------------------------------ report


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['p50_s'] * 1000:.0f} / {stats['p95_s'] * 1000:.0f}"


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# Performance", "",
             f"Checkpoint `{r['checkpoint']}` ({r['parameters']:,} parameters) on {m['device']} "
             f"({m['device_name']}), {m['threads']} CPU thread(s), torch {m['torch']}, {m['platform']}. "
             f"Measured {r['measured']}.", ""]
    if r.get("sections_from_earlier_runs"):
        lines += [f"Sections {', '.join(r['sections_from_earlier_runs'])} are kept from the run of "
                  f"{r['earlier_run_measured']} (this run re-measured the others).", ""]
    if "latency" in r:
        lat = r["latency"]
        first = next(iter(lat.values()))
        lines += [f"## Per-patient latency, warm (p50 / p95 ms over {first['predict']['n']} patients, min of "
                  f"{r['repeats']} runs each)", "",
                  "| modalities | predict | predict + group contributions | full review (CLI settings, word level) "
                  "| full review (page: 24 steps) |", "|---|---:|---:|---:|---:|"]
        for name, row in lat.items():
            lines.append(f"| {name} | {_ms(row['predict'])} | {_ms(row['predict_groups'])} | {_ms(row['review'])} "
                         f"| {_ms(row['review_page'])} |")
        lines.append("")
    if "scoring" in r:
        lines += ["## Cohort scoring (`python -m medfuse_core score`)", "",
                  f"Batch {r['scoring_settings']['batch_size']}, {r['scoring_settings']['workers']} DataLoader worker(s); "
                  "peak RSS of the command and its workers.", "",
                  "| patients | embedding cache | wall s | patients/s | peak RSS MB |", "|---:|---|---:|---:|---:|"]
        for run in r["scoring"]:
            lines.append(f"| {run['patients']:,} | {run['cache']} | {run['wall_s']:.1f} | {run['patients_per_s']:.1f} "
                         f"| {run['peak_rss_mb']:.0f} |")
        lines.append("")
    if "training" in r:
        t = r["training"]
        lines += ["## Training throughput (one epoch of `train`, validation included)", "",
                  f"{t['train_patients']} training + {t['val_patients']} validation patients.", "",
                  "| mode | epoch s | patients/s |", "|---|---:|---:|"]
        for mode in ("end_to_end", "stage2_cached_encoders"):
            lines.append(f"| {mode} | {t[mode]['epoch_s']:.1f} | {t[mode]['patients_per_s']:.1f} |")
        lines += ["", f"Model FLOPs utilisation: {t.get('mfu', 'n/a (no GPU)')}", ""]
    if "reference" in r:
        ref = r["reference"]
        s = ref["per_patient_s"]
        lines += ["## Side by side with the MedFuse reference architecture", "",
                  f"Same {ref['batch_size']} patients ({ref['with_image']} with a film), same device. Ours: "
                  f"{ref['ours_parameters']:,} parameters, four encoders (labs transformer, note adapter over cached "
                  "MiniLM sentence embeddings, vitals LSTM, ResNet at the checkpoint's image size), disentangler, "
                  f"fusion transformer. Reference: {ref['reference_parameters']:,} parameters (LSTM 2x256 + "
                  "ResNet-34 at 3x224x224 + fusion LSTM).", "",
                  "| per patient | ours ms | reference ms | ours / reference |", "|---|---:|---:|---:|",
                  f"| inference forward | {s['ours_forward'] * 1000:.2f} | {s['reference_forward'] * 1000:.2f} "
                  f"| {ref['forward_ratio']:.2f} |",
                  f"| inference forward, every film withheld | {s['ours_forward_no_image'] * 1000:.2f} "
                  f"| {s['reference_forward_no_image'] * 1000:.2f} | {ref['forward_no_image_ratio']:.2f} |",
                  f"| training step (forward + backward + AdamW) | {s['ours_train_step'] * 1000:.2f} "
                  f"| {s['reference_train_step'] * 1000:.2f} | {ref['train_step_ratio']:.2f} |", ""]
    if "captum" in r:
        c = r["captum"]
        lines += ["## Group attributions against naive Captum", "",
                  f"Exact Shapley values of the 5 tokens for all labels in one batched pass vs Captum `ShapleyValues` "
                  f"per label: **{c.get('speedup_p50', float('nan')):.0f}x** faster at the median (from `{c['source']}`).", ""]
    lines += ["## Targets", ""] + [f"- {t}" for t in r.get("targets", [])] + [""]
    return "\n".join(lines)


def targets(r: dict[str, Any]) -> list[str]:
    out = []
    if "latency" in r:
        full = r["latency"]["labs+notes+vitals+image"]
        review, predict = full["review"]["p50_s"], full["predict"]["p50_s"]
        gpu = r["machine"]["device"].startswith("cuda")
        limit = TARGETS["gpu_review_p50_s"] if gpu else TARGETS["review_p50_s"]
        out.append(f"full review p50 {review:.3f} s (all four modalities, CLI settings) <= {limit} s: "
                   f"{'met' if review <= limit else 'NOT met'}")
        if not gpu:
            goal = TARGETS["review_goal_p50_s"]
            out.append(f"full review p50 {review:.3f} s <= the goal {goal} s: {'met' if review <= goal else 'NOT met'}; "
                       f"review page p50 {full['review_page']['p50_s']:.3f} s; the evidence maps are "
                       f"{full['evidence_share_of_review']:.0%} of the review, {full['evidence_share_of_review_page']:.0%} "
                       "of the page's")
        out.append(f"predict p50 {predict * 1000:.0f} ms <= {TARGETS['predict_p50_s'] * 1000:.0f} ms: "
                   f"{'met' if predict <= TARGETS['predict_p50_s'] else 'NOT met'}")
    if "scoring" in r:
        warm = [run for run in r["scoring"] if run["cache"] == "warm"]
        rate = min(run["patients_per_s"] for run in warm)
        out.append(f"cohort scoring with the embedding cache warm: {rate:.1f} patients/s (slowest warm pass) >= "
                   f"{TARGETS['scoring_patients_per_s']:.0f}: {'met' if rate >= TARGETS['scoring_patients_per_s'] else 'NOT met'}")
        if len(warm) > 1:
            small, large = warm[0], warm[-1]
            growth = large["peak_rss_mb"] / small["peak_rss_mb"]
            out.append(f"peak memory {small['peak_rss_mb']:.0f} MB at {small['patients']:,} patients, "
                       f"{large['peak_rss_mb']:.0f} MB at {large['patients']:,} ({growth:.2f}x for "
                       f"{large['patients'] / small['patients']:.0f}x the patients): "
                       f"{'flat' if growth <= 1.25 else 'NOT flat'} (flat = at most 1.25x)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--data", type=Path, required=True, help="bundles for the latency and reference sections")
    parser.add_argument("--cohort", type=Path, action="append", default=[],
                        help="cohort folders to score (repeatable: e.g. 1k then 20k); the first one also trains")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--patients", type=int, default=20, help="latency: patients with all four modalities")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="scoring: DataLoader workers")
    parser.add_argument("--train-patients", type=int, default=512)
    parser.add_argument("--train-batch-size", type=int, default=None, help="training: batch size (default: the checkpoint's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; expected some of {', '.join(SECTIONS)}")
    if {"scoring", "training"} & set(sections) and not args.cohort:
        parser.error("--cohort is needed for the scoring and training sections")
    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.checkpoint, device=args.device)
    device = predictor.device
    result: dict[str, Any] = {
        "checkpoint": args.checkpoint, "data": str(args.data), "repeats": args.repeats,
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else (platform.processor() or "CPU"), "threads": args.threads, "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
    }
    records = []
    if {"latency", "reference"} & set(sections):
        for folder in find_bundles(args.data):
            record = read_bundle(folder)
            if all(record.has(m) for m in MODALITY_SETS["labs+notes+vitals+image"]):
                records.append(record)
            if len(records) >= max(args.patients, args.batch_size):
                break
    args.out_dir.mkdir(parents=True, exist_ok=True)
    previous_file = args.out_dir / "performance.json"
    if set(sections) != set(SECTIONS) and previous_file.exists():
        # a partial re-run keeps the other sections' figures (each carries the run it came from in "measured_by")
        previous = json.loads(previous_file.read_text())
        for name in set(SECTIONS) - set(sections):
            for key in (name, f"{name}_settings"):
                if key in previous:
                    result[key] = previous[key]
        result["sections_from_earlier_runs"] = sorted(
            {n for n in set(SECTIONS) - set(sections) if n in previous} | set(previous.get("sections_from_earlier_runs", [])) - set(sections))
        result["earlier_run_measured"] = previous.get("earlier_run_measured", previous.get("measured"))

    def save() -> None:
        result["targets"] = targets(result)
        write_benchmark_result(args.out_dir, "performance", result, markdown(result))

    if "latency" in sections:
        result["latency"] = latency(predictor, records[: args.patients], args.repeats)
        save()
    if "reference" in sections:
        result["reference"] = reference(predictor, records, args.batch_size, args.repeats)
        save()
    if "training" in sections:
        result["training"] = training(args.checkpoint, args.cohort[0], args.train_patients, str(device), args.train_batch_size)
        save()
    if "captum" in sections:
        result["captum"] = captum(args.threads)
        save()
    if "scoring" in sections:
        result["scoring_settings"] = {"batch_size": args.batch_size, "workers": args.workers}
        result["scoring"] = scoring(args.checkpoint, args.cohort, args.batch_size, args.workers, str(device), args.threads)
        save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
