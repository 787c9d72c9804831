"""Folds what benchmarks/gpu.sh measured into one gpu.json + gpu.md: the card, training throughput,
the full review latency against its goal (<= 100 ms per patient, MiniLM backbone, H100-class card)
and the notes language model's LoRA steps (eager vs torch.compile) and embedding batch sizes.

    python benchmarks/gpu_report.py --performance PERF.json --lm LM.json --out benchmarks/results/gpu.json
    python benchmarks/gpu_report.py --fallback --lm LM.json --out /tmp/gpu.json   # CPU check: marked as such
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

REVIEW_GOAL_S = 0.100


def build(performance: dict | None, lm: dict, fallback: bool) -> dict:
    out: dict = {"date": str(date.today()), "cpu_fallback": fallback, "device": lm["device"],
                 "device_name": lm["device_name"], "torch": lm["torch"], "notes_language_model": lm}
    if fallback:
        out["note"] = "CPU fallback at tiny size: checks the scripts, measures nothing about a GPU"
    if performance is not None:
        out["training"] = performance.get("training")
        latency = performance.get("latency", {})
        full = latency.get("labs+notes+vitals+image")
        out["latency"] = latency
        if full is not None:
            review = full["review"]["p50_s"]
            out["review_goal"] = {"review_p50_s": review, "goal_s": REVIEW_GOAL_S, "met": review <= REVIEW_GOAL_S,
                                  "review_page_p50_s": full["review_page"]["p50_s"], "predict_p50_s": full["predict"]["p50_s"]}
    return out


def markdown(r: dict) -> str:
    lm = r["notes_language_model"]
    lines = ["# GPU path", "",
             f"{r['device_name']} ({r['device']}), torch {r['torch']}, {r['date']}, `bash benchmarks/gpu.sh`."]
    if r["cpu_fallback"]:
        lines += ["", f"**{r['note']}.**"]
    if "review_goal" in r:
        g = r["review_goal"]
        lines += ["", "## Full review latency (all four modalities, warm, the demo checkpoint with MiniLM)", "",
                  f"p50 {g['review_p50_s'] * 1000:.0f} ms per patient (CLI settings: 64 IG steps, words); page settings "
                  f"{g['review_page_p50_s'] * 1000:.0f} ms; predict {g['predict_p50_s'] * 1000:.1f} ms. Goal <= "
                  f"{g['goal_s'] * 1000:.0f} ms: **{'met' if g['met'] else 'NOT met'}**."]
    if r.get("training"):
        t = r["training"]
        lines += ["", "## Training throughput (one epoch, bf16 autocast)", "", "| mode | batch | epoch s | patients/s |",
                  "|---|---:|---:|---:|"]
        for mode in ("end_to_end", "stage2_cached_encoders"):
            lines.append(f"| {mode} | {t[mode]['batch_size']} | {t[mode]['epoch_s']:.1f} | {t[mode]['patients_per_s']:.0f} |")
    lines += ["", f"## Notes language model: LoRA steps ({lm['sentences_per_step']} sentences per step)", "",
              "| model | parameters | trainable | torch.compile | first steps s | step p50 s | sentences/s |",
              "|---|---:|---:|---|---|---:|---:|"]
    for key, name in (("decoder_lora", f"random Llama ({lm['decoder']})"), ("minilm_lora", "all-MiniLM-L6-v2")):
        for row in lm[key]:
            lines.append(f"| {name} | {row['parameters']:,} | {row['trainable_parameters']:,} | "
                         f"{'on' if row['compiled'] else 'off'} | {', '.join(str(x) for x in row['first_steps_s'])} | "
                         f"{row['step_p50_s']:.4f} | {row['sentences_per_s']:.1f} |")
    lines += ["", "torch.compile helps the decoder step: " + ("yes" if lm["decoder_lora_compile_helps"] else "no")
              + "; the MiniLM step: " + ("yes" if lm["minilm_lora_compile_helps"] else "no") + ".", "",
              "## MiniLM sentence embedding throughput (no gradients)", "", "| precision | batch | sentences/s |",
              "|---|---:|---:|"]
    for row in lm["minilm_embed"]:
        lines.append(f"| {row['precision']} | {row['batch_size']} | {row['sentences_per_s']:.0f} |")
    best = lm["minilm_embed_best"]
    lines += ["", f"Fastest: batch {best['batch_size']} in {best['precision']} (`train.notes.embed_batch_size`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--performance", type=Path, help="benchmarks/performance.py's JSON (latency, training)")
    parser.add_argument("--lm", type=Path, required=True, help="benchmarks/notes_lm_step.py's JSON")
    parser.add_argument("--fallback", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    performance = json.loads(args.performance.read_text()) if args.performance else None
    report = build(performance, json.loads(args.lm.read_text()), args.fallback)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
