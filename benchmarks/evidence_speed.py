"""Evidence-map speed: per patient, one label, warm, on this machine's CPU (target: at most 2 s).

Loads a checkpoint (`Predictor.load`), reads `--patients` bundles of `--data`, featurizes them once
(the embedding cache warm), warms up on the first patient, then per patient times:

- evidence: `EvidenceExplainer(...)` + `label_evidence(label)` -- the four modalities' Captum maps
  (labs LayerIG, note sentence IG + token LayerIG for the top sentences, vitals IG, image Grad-CAM),
  with the explainer's default steps;
- explain: `explain(record, predictor, [label])` end to end (featurize with a warm cache, group
  contributions, evidence), what the app and the CLI call;
- a per-modality split of the evidence time.

Each patient's time is the minimum of `--repeats` runs (the machine may be shared); the figure is the
median over patients. Threads: 1 by default. Writes benchmarks/results/evidence_speed.json and .md.

    python benchmarks/evidence_speed.py --checkpoint RUN_DIR --data COHORT_DIR [--patients 20] [--label NAME]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.explain import explain  # noqa: E402
from medfuse_core.explain.evidence import DEFAULT_IMAGE_METHOD, IMAGE_METHODS, EvidenceExplainer  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.record import MODALITIES  # noqa: E402
from medfuse_core.sources.bundle import find_bundles, read_bundle  # noqa: E402
from medfuse_core.provenance import write_benchmark_result
from timing import latency_stats, timed  # noqa: E402  (benchmarks/timing.py)

TARGET_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="folder of patient bundles")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--label", help="default: the checkpoint's first label")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-method", default=DEFAULT_IMAGE_METHOD, choices=IMAGE_METHODS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    predictor = Predictor.load(args.checkpoint, device="cpu")
    label = args.label or predictor.labels[0]
    records = [read_bundle(b) for b in find_bundles(Path(args.data))[: args.patients]]
    features, index = predictor.featurize(records)  # embeds (and caches) every sentence once
    backbone = predictor.featurizer.backbone
    vocabulary = predictor.featurizer.vocabulary

    def evidence(i: int):
        ex = EvidenceExplainer(predictor.model, features[i], index[i], records[i], backbone, vocabulary)
        return ex.label_evidence(label, image_method=args.image_method)

    def parts(i: int) -> dict[str, float]:
        ex = EvidenceExplainer(predictor.model, features[i], index[i], records[i], backbone, vocabulary)
        out = {"labs": timed(lambda: ex.labs(label, 64))[0]}
        t, (sentences, _) = timed(lambda: ex.note_sentences(label, 64))
        out["note_sentences"] = t
        out["note_tokens"] = sum(timed(lambda s=s: ex.note_tokens(label, s.sentence, 16))[0] for s in sentences[:3])
        out["vitals"] = timed(lambda: ex.vitals(label, 64))[0]
        out["image"] = timed(lambda: ex.image(label, args.image_method))[0]
        return out

    evidence(0)  # warm-up: text model, Captum imports, allocator
    explain(records[0], predictor, [label], image_method=args.image_method)
    ev_runs = [[0.0] * args.repeats for _ in records]
    ex_runs = [[0.0] * args.repeats for _ in records]
    for r in range(args.repeats):
        for i in range(len(records)):
            ev_runs[i][r] = timed(lambda: evidence(i))[0]
            ex_runs[i][r] = timed(lambda: explain(records[i], predictor, [label], image_method=args.image_method))[0]
    split = [parts(i) for i in range(len(records))]
    ev, ex = latency_stats([min(x) for x in ev_runs]), latency_stats([min(x) for x in ex_runs])
    cfg = predictor.config["model"]
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "label": label,
        "image_method": args.image_method,
        "model": {"parameters": sum(p.numel() for p in predictor.model.parameters()), "image_size": predictor.featurizer.spec.image_size,
                  "image_hidden_sizes": cfg["image"]["hidden_sizes"], "vitals_hidden": cfg["vitals"]["hidden"],
                  "fusion": cfg["fusion"], "text_model": predictor.featurizer.spec.text_model},
        "patients": {"n": len(records),
                     "modalities_present_mean": {m: statistics.fmean(float(f.present[j]) for f in features) for j, m in enumerate(MODALITIES)},
                     "sentences_mean": statistics.fmean(len(ix.sentences) for ix in index),
                     "lab_items_mean": statistics.fmean(len(ix.lab_keys) for ix in index)},
        "evidence_one_label": ev,
        "explain_one_label": ex,
        "split_p50_s": {k: statistics.median(s[k] for s in split) for k in split[0]},
        "repeats": args.repeats,
        "target": {"evidence_p50_s": TARGET_S, "met": ev["p50_s"] <= TARGET_S},
        "machine": {"threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform(), "processor": platform.processor()},
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.mkdir(exist_ok=True)
    write_benchmark_result(RESULTS, "evidence_speed", result, _markdown(result))
    print(_markdown(result))


def _markdown(r: dict) -> str:
    m = r["model"]
    lines = [
        "# Evidence-map speed",
        "",
        f"Checkpoint `{r['checkpoint']}` ({m['parameters']:,} parameters, {m['image_size']} px image, image stages "
        f"{m['image_hidden_sizes']}, vitals LSTM {m['vitals_hidden']}, text model {m['text_model']}), "
        f"{r['patients']['n']} patients of `{r['data']}` (mean {r['patients']['sentences_mean']:.1f} sentences, "
        f"{r['patients']['lab_items_mean']:.1f} lab items), label \"{r['label']}\", image method {r['image_method']}. "
        f"CPU, {r['machine']['threads']} thread(s), warm, min of {r['repeats']} runs per patient, torch {r['machine']['torch']}. "
        f"Measured {r['measured']}.",
        "",
        "| per patient, one label | n | p50 s | p95 s | max s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, key in [("evidence maps (all four modalities)", "evidence_one_label"),
                      ("explain() end to end (featurize + groups + evidence)", "explain_one_label")]:
        s = r[key]
        lines.append(f"| {name} | {s['n']} | {s['p50_s']:.3f} | {s['p95_s']:.3f} | {s['max_s']:.3f} |")
    lines += ["", "Split of the evidence time (p50 over patients, seconds): "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["split_p50_s"].items()) + ".", "",
              f"Target: evidence maps for one disease in at most {r['target']['evidence_p50_s']:.0f} s (p50): "
              + ("met." if r["target"]["met"] else "NOT met."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
