"""The full review's evidence maps: where their time goes, and what each speed-up changes in the evidence.

For `--patients` patients of `--data` with all four modalities, each one's highest-risk disease (as the
review page opens it), with the CLI's settings (64 IG steps; film map at most GRADCAM_IG_STEPS; word
attributions for the top 3 sentences at 16 steps):

- evidence: the four maps as the review runs them now (`label_evidence`) against as it ran them before
  (labs and sentences at 64 steps, one Captum call per top sentence, the film's steps in chunks of 8),
  interleaved per patient: the ratio of their times.
- split: each evidence method's time as the review runs it now and its share of the evidence time (wall
  time of each call, the minimum of `--repeats`). On a shared machine only the shares mean anything.
- words: the top sentences' word-piece attributions in one Captum call (`note_tokens_batch`, what the
  review runs now) against one call per sentence (`note_tokens`, the previous way): the largest
  attribution difference, both convergence deltas, whether each sentence's top word agrees, and the time
  ratio (the two runs interleaved per patient, so load hits both alike).
- film batch: the film's IG steps in one batch (`internal_batch_size` = steps) against chunks of 8 (the
  previous setting): largest map difference, delta, time ratio.
- steps: labs, sentence and vitals IG at 16 / 32 / 64 steps against a `--reference-steps` reference:
  |convergence delta| mean and max, Pearson r of the attributions, whether the top item (lab, sentence,
  vitals channel) agrees. This is the evidence for leaving a step count where it is or lowering it
  (LAB_IG_STEPS, SENTENCE_IG_STEPS: 32; the vitals keep 64).

Writes benchmarks/results/review_evidence.json and .md. Timings are relative evidence only; the lead
re-runs `benchmarks/performance.py --sections latency` for the review's own figures.

    python benchmarks/review_evidence.py --checkpoint assets/demo_model --data HELDOUT [--patients 12]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.explain.evidence import GRADCAM_IG_STEPS, LAB_IG_STEPS, SENTENCE_IG_STEPS, EvidenceExplainer  # noqa: E402
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.provenance import data_provenance, write_benchmark_result  # noqa: E402
from medfuse_core.sources.bundle import find_bundles, read_bundle  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)

CLI_STEPS, TOKEN_STEPS, TOP_SENTENCES = 64, 16, 3
STEP_GRID = (16, 32, 64)


def _complete(record) -> bool:
    return record.labs is not None and bool(record.notes) and record.vitals is not None and bool(record.images)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(float), np.ravel(b).astype(float)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float(np.allclose(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def _min_time(fn, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t, out = timed(fn)
        best = min(best, t)
    return best, out


def _split(ex: EvidenceExplainer, k: int, repeats: int) -> dict[str, float]:
    """Each map's time as the review runs it now."""
    sentences, _ = ex.note_sentences(k, CLI_STEPS)
    top = sorted(e.sentence for e in sentences[:TOP_SENTENCES])
    return {"labs": _min_time(lambda: ex.labs(k, min(CLI_STEPS, LAB_IG_STEPS)), repeats)[0],
            "note_sentences": _min_time(lambda: ex.note_sentences(k, min(CLI_STEPS, SENTENCE_IG_STEPS)), repeats)[0],
            "note_words": _min_time(lambda: ex.note_tokens_batch(k, top, TOKEN_STEPS), repeats)[0],
            "vitals": _min_time(lambda: ex.vitals(k, CLI_STEPS), repeats)[0],
            "image": _min_time(lambda: ex.image(k, n_steps=CLI_STEPS), repeats)[0]}


def _before(ex: EvidenceExplainer, k: int) -> None:
    """The four maps as the review ran them before these changes: labs and sentences at the CLI's 64 steps,
    one Captum call per top sentence for the words, the film's steps in chunks of 8."""
    ex.labs(k, CLI_STEPS)
    sentences, _ = ex.note_sentences(k, CLI_STEPS)
    for i in sorted(e.sentence for e in sentences[:TOP_SENTENCES]):
        ex.note_tokens(k, i, TOKEN_STEPS)
    ex.vitals(k, CLI_STEPS)
    ex.image(k, n_steps=CLI_STEPS, internal_batch_size=8)


def _evidence_ratio(ex: EvidenceExplainer, k: int, repeats: int) -> dict[str, float]:
    before_s = now_s = 0.0
    for _ in range(repeats):  # interleaved
        before_s += timed(lambda: _before(ex, k))[0]
        now_s += timed(lambda: ex.label_evidence(k, top_sentences=TOP_SENTENCES, n_steps=CLI_STEPS,
                                                 token_steps=TOKEN_STEPS))[0]
    return {"before_s": before_s / repeats, "now_s": now_s / repeats}


def _words(ex: EvidenceExplainer, k: int, repeats: int) -> dict[str, Any]:
    sentences, _ = ex.note_sentences(k, CLI_STEPS)
    top = sorted(e.sentence for e in sentences[:TOP_SENTENCES])
    one_by_one_s = batched_s = 0.0
    for _ in range(repeats):  # interleaved
        t, singles = timed(lambda: [ex.note_tokens(k, i, TOKEN_STEPS) for i in top])
        one_by_one_s += t
        t, (batched, batched_delta) = timed(lambda: ex.note_tokens_batch(k, top, TOKEN_STEPS))
        batched_s += t
    single_tokens = [tok for tokens, _ in singles for tok in tokens]
    diff = max((abs(a.attribution - b.attribution) for a, b in zip(single_tokens, batched)), default=0.0)
    same_order = [(a.sentence, a.start, a.end) for a in single_tokens] == [(b.sentence, b.start, b.end) for b in batched]

    def top_word(tokens, i):
        own = [t for t in tokens if t.sentence == i]
        return max(own, key=lambda t: abs(t.attribution)).start if own else None

    return {"sentences": len(top), "tokens": len(batched), "same_tokens": same_order, "max_abs_difference": diff,
            "largest_abs_attribution": max((abs(t.attribution) for t in single_tokens), default=0.0),
            "delta_one_by_one": max((d for _, d in singles), default=0.0), "delta_batched": batched_delta,
            "top_word_agrees": sum(top_word(single_tokens, i) == top_word(batched, i) for i in top),
            "time_one_by_one_s": one_by_one_s / repeats, "time_batched_s": batched_s / repeats}


def _film(ex: EvidenceExplainer, k: int, repeats: int) -> dict[str, Any]:
    chunked_s = whole_s = 0.0
    for _ in range(repeats):  # interleaved
        t, chunked = timed(lambda: ex.image(k, n_steps=CLI_STEPS, internal_batch_size=8))
        chunked_s += t
        t, whole = timed(lambda: ex.image(k, n_steps=CLI_STEPS, internal_batch_size=GRADCAM_IG_STEPS))
        whole_s += t
    return {"max_abs_map_difference": float(np.abs(chunked.model_map - whole.model_map).max()),
            "delta_chunks_of_8": chunked.convergence_delta, "delta_one_batch": whole.convergence_delta,
            "time_chunks_of_8_s": chunked_s / repeats, "time_one_batch_s": whole_s / repeats}


def _steps(ex: EvidenceExplainer, k: int, reference_steps: int) -> dict[str, Any]:
    def labs(n):
        items, delta = ex.labs(k, n)
        return {e.key: e.attribution for e in items}, delta

    def sentences(n):
        items, delta = ex.note_sentences(k, n)
        return {e.sentence: e.attribution for e in items}, delta

    def vitals(n):
        v = ex.vitals(k, n)
        return {c: float(x) for c, x in zip(v.channels, v.matrix.sum(axis=0))}, v.convergence_delta, v.matrix

    out: dict[str, Any] = {}
    for name, run in (("labs", labs), ("note_sentences", sentences), ("vitals", vitals)):
        reference = run(reference_steps)
        ref_values, ref_delta = reference[0], reference[1]
        keys = sorted(ref_values, key=str)
        ref_vector = reference[2] if name == "vitals" else np.array([ref_values[key] for key in keys])
        ref_top = max(ref_values, key=lambda key: abs(ref_values[key]))
        row = {"reference_delta": ref_delta}
        for n in STEP_GRID:
            got = run(n)
            vector = got[2] if name == "vitals" else np.array([got[0][key] for key in keys])
            row[str(n)] = {"delta": got[1], "pearson_r": _pearson(vector, ref_vector),
                           "top_agrees": max(got[0], key=lambda key: abs(got[0][key])) == ref_top}
        out[name] = row
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    split_keys = list(rows[0]["split_s"])
    split = {key: statistics.median(r["split_s"][key] for r in rows) for key in split_keys}
    total = sum(split.values())
    words = [r["words"] for r in rows if r["words"]["sentences"]]
    films = [r["film"] for r in rows]
    steps: dict[str, Any] = {}
    for name in ("labs", "note_sentences", "vitals"):
        steps[name] = {"reference_delta_mean": statistics.fmean(r["steps"][name]["reference_delta"] for r in rows)}
        for n in STEP_GRID:
            cells = [r["steps"][name][str(n)] for r in rows]
            steps[name][str(n)] = {"delta_mean": statistics.fmean(c["delta"] for c in cells),
                                   "delta_max": max(c["delta"] for c in cells),
                                   "pearson_r_min": min(c["pearson_r"] for c in cells),
                                   "top_agrees": sum(c["top_agrees"] for c in cells), "patients": len(cells)}
    return {
        "split_median_s": split, "split_share": {k: v / total for k, v in split.items()},
        "evidence_time_ratio_now_over_before": (sum(r["evidence"]["now_s"] for r in rows)
                                                / max(sum(r["evidence"]["before_s"] for r in rows), 1e-12)),
        "words": {"patients": len(words), "sentences": sum(w["sentences"] for w in words),
                  "same_tokens": all(w["same_tokens"] for w in words),
                  "max_abs_difference": max((w["max_abs_difference"] for w in words), default=0.0),
                  "largest_abs_attribution": max((w["largest_abs_attribution"] for w in words), default=0.0),
                  "max_delta_change": max((abs(w["delta_batched"] - w["delta_one_by_one"]) for w in words), default=0.0),
                  "top_word_agrees": sum(w["top_word_agrees"] for w in words),
                  "time_ratio_batched": (sum(w["time_batched_s"] for w in words)
                                         / max(sum(w["time_one_by_one_s"] for w in words), 1e-12))},
        "film": {"max_abs_map_difference": max(f["max_abs_map_difference"] for f in films),
                 "max_delta_change": max(abs(f["delta_one_batch"] - f["delta_chunks_of_8"]) for f in films),
                 "time_ratio_one_batch": (sum(f["time_one_batch_s"] for f in films)
                                          / max(sum(f["time_chunks_of_8_s"] for f in films), 1e-12))},
        "steps": steps,
    }


def _cohort(data: dict[str, Any]) -> str:
    return data.get("made_by") or data.get("path") or "?"


def _markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "# The full review's evidence maps: time split and speed-ups (issue 15 item 2)", "",
        f"Checkpoint `{result['checkpoint']}`, {result['patients']} patients of `{_cohort(result['data'])}` with all four "
        f"modalities, each one's highest-risk disease; CLI settings ({CLI_STEPS} IG steps, film at most "
        f"{GRADCAM_IG_STEPS}, words for the top {TOP_SENTENCES} sentences at {TOKEN_STEPS} steps); {result['threads']} "
        f"torch thread. Measured {result['measured']} on a shared machine: times are relative evidence only.", "",
        "## The four maps, now against before (interleaved per patient)", "",
        f"Evidence time now / before: {s['evidence_time_ratio_now_over_before']:.2f} (before: labs and sentences at "
        f"{CLI_STEPS} steps, one Captum call per top sentence, film steps in chunks of 8; now: labs at most "
        f"{LAB_IG_STEPS} and sentences at most {SENTENCE_IG_STEPS} steps, the top sentences in one call, the film's "
        f"{GRADCAM_IG_STEPS} steps in one batch). The full review's own figure is `benchmarks/performance.py`'s.", "",
        "## Where the evidence time goes now (median per patient)", "",
        "| method | s | share |", "|---|---:|---:|",
    ]
    for key, value in s["split_median_s"].items():
        lines.append(f"| {key} | {value:.3f} | {s['split_share'][key]:.0%} |")
    w, f = s["words"], s["film"]
    lines += [
        "", "## Word attributions: the top sentences in one Captum call", "",
        f"{w['sentences']} sentences of {w['patients']} patients, one call per sentence (before) against one call for "
        f"a patient's top sentences (now): same tokens {w['same_tokens']}; largest attribution difference "
        f"{w['max_abs_difference']:.2e} (largest |attribution| {w['largest_abs_attribution']:.3f}); largest change of "
        f"the convergence delta {w['max_delta_change']:.2e}; top word agrees in {w['top_word_agrees']} of "
        f"{w['sentences']}; time ratio now / before {w['time_ratio_batched']:.2f} (interleaved).", "",
        "## Film map: the IG steps in one batch", "",
        f"{GRADCAM_IG_STEPS} steps in one batch (now) against chunks of 8 (before): largest map difference "
        f"{f['max_abs_map_difference']:.2e}, largest change of the convergence delta {f['max_delta_change']:.2e}; "
        f"time ratio now / before {f['time_ratio_one_batch']:.2f} (interleaved).", "",
        f"## IG steps against a {result['reference_steps']}-step reference", "",
        "| method | steps | |delta| mean | |delta| max | Pearson r (min) | top item agrees |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in s["steps"].items():
        lines.append(f"| {name} | {result['reference_steps']} (reference) | {row['reference_delta_mean']:.2e} | | | |")
        for n in STEP_GRID:
            c = row[str(n)]
            lines.append(f"| {name} | {n} | {c['delta_mean']:.2e} | {c['delta_max']:.2e} | {c['pearson_r_min']:.5f} | "
                         f"{c['top_agrees']} / {c['patients']} |")
    lines += ["", "Command: `" + result["command"] + "`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--data", required=True, help="folder of patient bundles (e.g. synth --n 500 --seed 2000)")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference-steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.checkpoint, device="cpu")
    records = []
    for folder in find_bundles(Path(args.data)):
        record = read_bundle(folder)
        if _complete(record):
            records.append(record)
        if len(records) == args.patients:
            break
    features, index = predictor.featurize(records)
    diseases = [int(p.probabilities[:-1].argmax()) for p in predictor.predict(records)]
    backbone, vocabulary = predictor.featurizer.backbone, predictor.featurizer.vocabulary
    rows = []
    for i, record in enumerate(records):
        ex = EvidenceExplainer(predictor.model, features[i], index[i], record, backbone, vocabulary)
        k = diseases[i]
        if i == 0:
            ex.label_evidence(k)  # warm-up: text model, Captum, allocator
        rows.append({"patient": record.patient_id, "label": predictor.labels[k], "split_s": _split(ex, k, args.repeats),
                     "evidence": _evidence_ratio(ex, k, args.repeats),
                     "words": _words(ex, k, args.repeats), "film": _film(ex, k, args.repeats),
                     "steps": _steps(ex, k, args.reference_steps)})
        print(f"{i + 1}/{len(records)} {record.patient_id}", flush=True)
    result = {"checkpoint": args.checkpoint, "data": data_provenance(args.data), "patients": len(rows), "threads": args.threads,
              "repeats": args.repeats, "reference_steps": args.reference_steps, "summary": _summary(rows), "rows": rows,
              "command": "python benchmarks/review_evidence.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_benchmark_result(args.out_dir, "review_evidence", result, _markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
