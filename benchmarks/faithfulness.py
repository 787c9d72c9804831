"""Faithfulness benchmark: route accuracy (the pair), evidence localisation and deletion curves of one or
more checkpoints on a held-out synthetic cohort, scored against its truth.json (see
medfuse_core/benchmarking/faithfulness.py for every definition).

    python benchmarks/faithfulness.py --checkpoint RUN_DIR [--checkpoint RUN_DIR2 ...] --data HELDOUT_DIR
        [--max-patients N] [--n-steps 32] [--draws 5] [--seed 0] [--image-method gradcam]
        [--sweep-json FILE] [--device cpu] [--threads 1]
        [--out benchmarks/results/faithfulness.json] [--md benchmarks/results/faithfulness.md]

Every --checkpoint gets the full benchmark (ours, the no-MI ablation, ...). --sweep-json FILE names more
checkpoints (a JSON list of run folders, or of {"checkpoint": RUN_DIR, "name": str}, or
{"checkpoints": [...]}; relative paths are tried as given, then relative to FILE) for which only the
route pair is computed (cheap: one batched exact-Shapley pass) and tabulated with the loss weights of
their config.json (train.loss): the disentanglement trade-off curve. The full checkpoints appear in that
table too.

Writes the JSON and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from medfuse_core.numbers import json_safe  # noqa: E402
from medfuse_core.explain.evidence import DEFAULT_IMAGE_METHOD, IMAGE_METHODS  # noqa: E402
from medfuse_core.train.objective import DISENTANGLEMENT_WEIGHTS  # noqa: E402
from medfuse_core.benchmarking.faithfulness import (  # noqa: E402
    DEFAULT_KS,
    IMAGE_FRACTIONS,
    PATCH,
    faithfulness,
    load_cases,
    route_pair,
)
from medfuse_core.predictor import Predictor  # noqa: E402
from medfuse_core.record import MODALITIES  # noqa: E402
from medfuse_core.provenance import scrub_paths

TARGETS = {"single_route": 0.90, "shared_route": 0.80,
           "localisation": {"labs": 0.90, "notes": 0.80, "vitals": 0.80, "image": 0.80}}
LOSS_KEYS = DISENTANGLEMENT_WEIGHTS + ("token_dropout", "shared_token_dropout")


def _sweep_entries(path: Path) -> list[dict[str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("checkpoints", [])
    out = []
    for item in data:
        entry = {"checkpoint": item} if isinstance(item, str) else dict(item)
        run = Path(entry["checkpoint"])
        if not run.exists() and (path.parent / run).exists():
            run = path.parent / run
        entry["checkpoint"] = str(run)
        out.append(entry)
    return out


def _shared_token_dropout(loss: dict[str, Any]) -> Any:
    """The rate the shared token was really dropped at (None in the config means token_dropout)."""
    value = loss.get("shared_token_dropout")
    return loss.get("token_dropout") if value is None else value


def _route_row(name: str, run: str, predictor: Predictor, routes: dict | None, full: bool) -> dict[str, Any]:
    model = predictor.config.get("model", {})
    train = predictor.config.get("train") or {}
    loss = train.get("loss") or {}  # an older checkpoint's model.loss is read here too (checkpoint.upgrade_config)
    r = routes or {}
    loss = {**loss, "shared_token_dropout": _shared_token_dropout(loss)}
    return {"name": name, "checkpoint": run, "variant": model.get("variant", ""), "full_benchmark": full,
            "head": (model.get("fusion") or {}).get("head", "transformer"),
            "seed": train.get("fusion_seed") if train.get("fusion_seed") is not None else train.get("seed"),
            "loss": {k: loss.get(k) for k in LOSS_KEYS if k in loss},
            "single_route": r.get("single_route"), "shared_route": r.get("shared_route"),
            "n_single": r.get("n_single"), "n_shared": r.get("n_shared")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], help="run folder (repeatable)")
    parser.add_argument("--name", action="append", default=[], help="display name per --checkpoint, in order")
    parser.add_argument("--data", required=True, help="held-out synthetic cohort (bundle folders with truth.json)")
    parser.add_argument("--max-patients", type=int, default=None)
    parser.add_argument("--n-steps", type=int, default=32, help="IG steps of the evidence maps")
    parser.add_argument("--draws", type=int, default=5, help="random deletions per k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-method", default=DEFAULT_IMAGE_METHOD, choices=IMAGE_METHODS)
    parser.add_argument("--patch", type=int, default=PATCH)
    parser.add_argument("--sweep-json", default=None, help="more checkpoints for the route-pair curve only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "faithfulness.json"))
    parser.add_argument("--md", default=None, help="markdown table (default: --out with .md)")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.sweep_json:
        parser.error("give at least one --checkpoint or --sweep-json")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    cases = load_cases([args.data], args.max_patients)
    if not cases:
        print(f"faithfulness: no synthetic bundles with truth.json under {args.data}", file=sys.stderr)
        return 2
    names = list(args.name) + [Path(c).name for c in args.checkpoint[len(args.name):]]
    reports, sweep = [], []
    for name, run in zip(names, args.checkpoint):
        predictor = Predictor.load(run, device=args.device)
        report = faithfulness(predictor, cases, n_steps=args.n_steps, draws=args.draws, seed=args.seed,
                              ks=DEFAULT_KS, fractions=IMAGE_FRACTIONS, patch=args.patch,
                              image_method=args.image_method, checkpoint=str(run), progress=sys.stderr.isatty())
        d = dict(report.to_dict(), name=name)
        reports.append(d)
        sweep.append(_route_row(name, str(run), predictor, d["route_accuracy"], True))
        print(f"{name}: routes {_pair(d['route_accuracy'])}, {report.seconds:.0f} s", file=sys.stderr)
    if args.sweep_json:
        records = [c.record for c in cases]
        for entry in _sweep_entries(Path(args.sweep_json)):
            run = entry["checkpoint"]
            predictor = Predictor.load(run, device=args.device)
            features, _ = predictor.featurize(records)
            routes, _, _ = route_pair(predictor, features)
            row = _route_row(entry.get("name") or Path(run).name, run, predictor, routes.to_dict() if routes else None, False)
            sweep.append(row)
            print(f"sweep {row['name']}: routes {_pair(row)}", file=sys.stderr)

    result = json_safe({
        "data": str(args.data), "n_patients": len(cases), "max_patients": args.max_patients,
        "targets": TARGETS, "checkpoints": reports, "sweep": sweep if args.sweep_json else [],
        "settings": {"n_steps": args.n_steps, "draws": args.draws, "seed": args.seed, "image_method": args.image_method,
                     "patch": args.patch, "ks": list(DEFAULT_KS), "image_fractions": list(IMAGE_FRACTIONS),
                     "device": args.device, "threads": args.threads},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
        "seconds": time.perf_counter() - start,
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(scrub_paths(json.dumps(result, indent=1, allow_nan=False) + "\n"), encoding="utf-8")
    md = Path(args.md) if args.md else out.with_suffix(".md")
    md.write_text(scrub_paths(markdown(result)), encoding="utf-8")
    print(f"wrote {out} and {md}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------- markdown


def _f(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pair(r: dict | None) -> str:
    if not r:
        return "n/a (no fusion tokens)"
    return f"{_f(r.get('single_route'))} / {_f(r.get('shared_route'))}"


def _met(value: Any, target: float) -> str:
    return "" if value is None else (" ✓" if value >= target else " ✗")


def markdown(r: dict) -> str:
    lines = ["# Faithfulness of the attributions", "",
             f"Held-out synthetic cohort `{r['data']}`, {r['n_patients']} patients; evidence maps: "
             f"{r['settings']['image_method']} for the image, IG with {r['settings']['n_steps']} steps elsewhere; "
             f"random deletions: mean of {r['settings']['draws']} seeded draws. Measured {r['measured']} "
             f"({r['settings']['device']}, {r['settings']['threads']} thread(s), {r['seconds']:.0f} s in all).", "",
             "Targets: route accuracy >= 0.90 single-route and >= 0.80 shared-route, *by the same checkpoint*; "
             "localisation >= 0.90 labs, >= 0.80 notes, vitals, image; deletion of the top-k beats random at every k.", ""]
    if r["checkpoints"]:
        lines += ["## Route accuracy (true positives; the pair)", "",
                  "| checkpoint | variant | single-route | n | shared-route | n | both targets |", "|---|---|---:|---:|---:|---:|---|"]
        for c in r["checkpoints"]:
            a = c["route_accuracy"] or {}
            both = (a.get("single_route") is not None and a.get("shared_route") is not None
                    and a["single_route"] >= TARGETS["single_route"] and a["shared_route"] >= TARGETS["shared_route"])
            lines.append(f"| {c['name']} | {c['variant']} | {_f(a.get('single_route'))} | {a.get('n_single', 0)} | "
                         f"{_f(a.get('shared_route'))} | {a.get('n_shared', 0)} | {'met' if both else 'not met'} |")
        lines += ["", "Per disease (accuracy, n):", "",
                  "| disease | route | " + " | ".join(c["name"] for c in r["checkpoints"]) + " |",
                  "|---|---|" + "---:|" * len(r["checkpoints"])]
        diseases = list((r["checkpoints"][0]["route_accuracy"] or {}).get("per_disease", {}))
        for d in diseases:
            cells = []
            for c in r["checkpoints"]:
                p = ((c["route_accuracy"] or {}).get("per_disease") or {}).get(d, {})
                cells.append(f"{_f(p.get('accuracy'))} ({p.get('n', 0)})")
            route = (r["checkpoints"][0]["route_accuracy"]["per_disease"][d] or {}).get("route", "")
            lines.append(f"| {d} | {route} | " + " | ".join(cells) + " |")

        lines += ["", "## Evidence localisation (true positives with visible planted evidence)", "",
                  "Hit rate by signed attribution (|attribution| in brackets), n scored; "
                  "`not_visible`: planted but outside what the model saw, not scored.", "",
                  "| checkpoint | " + " | ".join(MODALITIES) + " |", "|---|" + "---|" * len(MODALITIES)]
        for c in r["checkpoints"]:
            cells = []
            for m in MODALITIES:
                x = c["localisation"][m]
                extra = f", {x['flat']} flat" if m == "image" and x["flat"] else ""
                cells.append(f"{_f(x['hit_rate'])}{_met(x['hit_rate'], TARGETS['localisation'][m])} "
                             f"({_f(x['hit_rate_abs'])}) n={x['n']}, {x['not_visible']} not visible{extra}")
            lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")

        lines += ["", "## Deletion curves (mean drop of the label's logit)", "",
                  "Area = mean drop over the k grid (labs, notes, vitals: k = 1..5 units; image: 2-30% of the "
                  "film's patches).", "",
                  "| checkpoint | modality | cases | area top-k | area random | top-k beats random at every k |",
                  "|---|---|---:|---:|---:|---|"]
        for c in r["checkpoints"]:
            for m in MODALITIES:
                x = c["deletion"][m]
                lines.append(f"| {c['name']} | {m} | {x['n_cases']} | {_f(x['area_top'], 3)} | {_f(x['area_random'], 3)} | "
                             f"{'yes' if x['top_beats_random'] else 'no'} |")
        lines += ["", "Curves per k (top-k / random):", ""]
        for c in r["checkpoints"]:
            for m in MODALITIES:
                x = c["deletion"][m]
                pts = ", ".join(f"{k:g}: {_f(t, 3)} / {_f(q, 3)}" for k, t, q in zip(x["k"], x["top"], x["random"]))
                lines.append(f"- {c['name']}, {m}: {pts}")
    if r["sweep"]:
        lines += ["", "## Disentanglement sweep: the route pair against the loss weights", "",
                  "Each row is one stage-2 training (same encoders and split); rows that differ only in the seed "
                  "(stage 2's) show how far the pair moves with the seed alone.", "",
                  "| checkpoint | variant | head | " + " | ".join(LOSS_KEYS) + " | seed | single-route | shared-route |",
                  "|---|---|---|" + "---:|" * len(LOSS_KEYS) + "---:|---:|---:|"]
        for s in r["sweep"]:
            weights = " | ".join(_f(s["loss"].get(k)) if s["loss"].get(k) is not None else "" for k in LOSS_KEYS)
            seed = "" if s.get("seed") is None else s["seed"]
            lines.append(f"| {s['name']}{' (full)' if s['full_benchmark'] else ''} | {s['variant']} | {s.get('head', '')} | "
                         f"{weights} | {seed} | "
                         f"{_f(s['single_route'])} | {_f(s['shared_route'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
