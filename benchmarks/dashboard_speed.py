"""Dashboard speed on this CPU: the patient review page of a demo patient, warm, and a disease switch.

Measured headless with Streamlit's AppTest: it runs the real page script (app/main.py ->
views/patient.py) in this process, with the same st.cache_data / st.cache_resource caches a server
process has, so "warm" means what it means for a running server: the cohort read, the model loaded,
the cohort scored, the evidence of the (patient, disease) explained once before. The numbers are the
server-side script time (what app/ controls); they leave out the websocket transfer and the browser's
drawing of the plotly figures (tests/app/test_browser.py exercises those in Chromium). A headless
server + Playwright would add the browser's paint time but its noise on a shared 2-core machine is larger
than the effect being measured, and it needs Chromium at benchmark time; AppTest needs nothing.

Timings:
- cold: the first render of the review page in a fresh process (not a target; reported);
- warm page: a new session (new AppTest) opening the review page of `--patient`, after one warm-up
  render; `--repeats` runs, median reported (target <= 2 s);
- warm page, a patient not opened before: the model loaded and the cohort scored, but this patient's
  evidence not yet explained (P00005, P00006, ...: one run each);
- disease switch, warm: selecting another disease whose evidence is already cached (every disease of the
  patient explained once before); median over the diseases x `--rounds` (target <= 0.5 s);
- disease switch, first time: selecting a disease whose evidence is not cached yet (includes explain():
  Integrated Gradients for labs, notes (sentences + top-3 sentences' tokens), vitals, Grad-CAM); median.

A disease switch is a widget change inside the st.fragment `_disease_part`, so Streamlit reruns only
that fragment (AppTest honours fragment-scoped reruns).

    python benchmarks/dashboard_speed.py --checkpoint /path/to/run [--patient P00004] [--repeats 7] [--rounds 2]

The checkpoint defaults to $MEDFUSE_LENS_CHECKPOINT, else assets/demo_model. Writes
benchmarks/results/dashboard_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from medfuse_core.provenance import scrub_paths
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MAIN = str(ROOT / "app" / "main.py")
sys.path.insert(0, str(ROOT))

TARGET_PAGE_S = 2.0
TARGET_SWITCH_S = 0.5


def _open(patient: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=600)
    at.query_params["patient"] = patient
    return at.switch_page("views/patient.py")


def _check(at) -> None:
    if at.exception:
        raise RuntimeError("the page raised: " + " | ".join(e.value for e in at.exception))


def _timed_run(at) -> float:
    t = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t
    _check(at)
    return elapsed


def _summary(samples: list[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "n": len(samples), "samples_s": [round(s, 4) for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=os.environ.get("MEDFUSE_LENS_CHECKPOINT") or str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--patient", default="P00004")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--diseases", type=int, default=5, help="how many diseases to switch through")
    args = parser.parse_args()
    os.environ["MEDFUSE_LENS_CHECKPOINT"] = args.checkpoint
    os.environ.pop("MEDFUSE_LENS_SOURCE", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    cold_at = _open(args.patient)
    cold = _timed_run(cold_at)
    if cold_at.selectbox(key="disease") is None:
        raise SystemExit("no model: the checkpoint did not load")

    _timed_run(_open(args.patient))  # warm-up: a second session
    page = [_timed_run(_open(args.patient)) for _ in range(args.repeats)]
    others = [f"P{i:05d}" for i in range(5, 5 + args.repeats) if f"P{i:05d}" != args.patient]
    page_new_patient = [_timed_run(_open(pid)) for pid in others]  # not opened before: explain() runs

    at = _open(args.patient)
    _timed_run(at)
    box = at.selectbox(key="disease")  # options are the displayed (short) names: select by index
    start = int(box.index)
    diseases = [i for i in range(len(box.options)) if i != start][: args.diseases]
    first, warm, seen = [], [], []
    for i in diseases:  # first visit of each disease: explain() runs
        at.selectbox(key="disease").select_index(i)
        first.append(_timed_run(at))
        seen.append(at.selectbox(key="disease").value)
    if len(set(seen)) != len(diseases):
        raise RuntimeError(f"the disease did not switch: {seen}")
    for _ in range(args.rounds):  # every one cached now
        for i in [start, *diseases]:
            at.selectbox(key="disease").select_index(i)
            warm.append(_timed_run(at))
    title_kept = bool(at.title) and at.title[0].value == f"Patient {args.patient}"

    result = {
        "benchmark": "dashboard_speed",
        "method": "streamlit.testing.v1.AppTest (server-side script time, in-process caches as a server)",
        "torch_threads_for_explanations": os.environ.get("MEDFUSE_LENS_TORCH_THREADS", "1"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_1min_at_end": os.getloadavg()[0]},
        "checkpoint": args.checkpoint,
        "patient": args.patient,
        "cold_first_render_s": round(cold, 3),
        "warm_page": _summary(page),
        "warm_page_patient_not_opened_before": {**_summary(page_new_patient), "patients": others},
        "disease_switch_warm": _summary(warm),
        "disease_switch_first_time": _summary(first),
        "targets": {"warm_page_s": TARGET_PAGE_S, "disease_switch_s": TARGET_SWITCH_S},
        "meets_targets": {"warm_page": statistics.median(page) <= TARGET_PAGE_S,
                          "warm_page_patient_not_opened_before": statistics.median(page_new_patient) <= TARGET_PAGE_S,
                          "disease_switch_warm": statistics.median(warm) <= TARGET_SWITCH_S,
                          "disease_switch_first_time": statistics.median(first) <= TARGET_SWITCH_S},
        "fragment_rerun_kept_page_header": title_kept,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dashboard_speed.json").write_text(scrub_paths(json.dumps(result, indent=1)))
    ok = lambda b: "yes" if b else "**no**"  # noqa: E731
    md = [
        "# Dashboard speed (patient review page)",
        "",
        f"AppTest, server-side script time; checkpoint `{args.checkpoint}`, patient {args.patient}; "
        f"{os.cpu_count()} CPUs (shared machine, 1-min load {result['machine']['load_avg_1min_at_end']:.1f} at the end), "
        f"torch threads {torch.get_num_threads()} (explanations and cohort scoring run with "
        f"{result['torch_threads_for_explanations']}: medfuse_core/runtime/threads.py interactive_threads). "
        "Produced by `python benchmarks/dashboard_speed.py`.",
        "",
        "| measurement | median | min | max | n | target | met |",
        "|---|---|---|---|---|---|---|",
        f"| warm review page (new session) | {result['warm_page']['median_s']:.3f} s | {min(page):.3f} | {max(page):.3f} "
        f"| {len(page)} | ≤ {TARGET_PAGE_S} s | {ok(result['meets_targets']['warm_page'])} |",
        f"| warm review page, a patient not opened before (explain() runs) | "
        f"{result['warm_page_patient_not_opened_before']['median_s']:.3f} s | {min(page_new_patient):.3f} | "
        f"{max(page_new_patient):.3f} | {len(page_new_patient)} | ≤ {TARGET_PAGE_S} s | "
        f"{ok(result['meets_targets']['warm_page_patient_not_opened_before'])} |",
        f"| disease switch, evidence cached | {result['disease_switch_warm']['median_s']:.3f} s | {min(warm):.3f} | "
        f"{max(warm):.3f} | {len(warm)} | ≤ {TARGET_SWITCH_S} s | {ok(result['meets_targets']['disease_switch_warm'])} |",
        f"| disease switch, first time (explain() runs) | {result['disease_switch_first_time']['median_s']:.3f} s | "
        f"{min(first):.3f} | {max(first):.3f} | {len(first)} | ≤ {TARGET_SWITCH_S} s | "
        f"{ok(result['meets_targets']['disease_switch_first_time'])} |",
        f"| cold first render (fresh process, not a target) | {cold:.3f} s | | | 1 | | |",
        "",
        "Not included: websocket transfer and the browser drawing the plotly figures.",
    ]
    (RESULTS / "dashboard_speed.md").write_text(scrub_paths("\n".join(md) + "\n"))
    print("\n".join(md))


if __name__ == "__main__":
    main()
