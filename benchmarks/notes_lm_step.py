"""The notes language model on this device: LoRA fine-tuning steps (a decoder LLM and MiniLM) and
sentence-embedding throughput by batch size and precision; `torch.compile` measured, not assumed.

- decoder LoRA step: a random Llama-architecture decoder built locally from a config (no download;
  `--decoder small`: 16 layers x 2048 hidden, ~0.9 B parameters, bf16 weights on CUDA; `tiny`: 2 x
  32), tokenizer trained on synthetic note sentences; LoRA rank 16 on q/v; one step = tokenize
  `--sentences` sentences (prompt template, left padding) + forward + last-token pooling + a linear
  head + BCE + backward + AdamW, as train/notes_finetune.py runs it; bf16 autocast on CUDA.
- MiniLM LoRA step: the same with the packaged all-MiniLM-L6-v2 (mean pooling).
- each step eager and, on CUDA, under `torch.compile` (the first compiled steps, compilation
  included, are reported apart); the faster is what `train.notes.compile` should say.
- MiniLM embedding throughput (`TextBackbone.embed`, no gradients) at several batch sizes, fp32 and
  bf16 autocast: the batch size that fills the device.

    python benchmarks/notes_lm_step.py --out /tmp/lm.json                 # CUDA: small decoder
    python benchmarks/notes_lm_step.py --tiny --device cpu --out /tmp/x.json  # the CPU check (seconds)

Run by benchmarks/gpu.sh, which folds the JSON into benchmarks/results/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medfuse_core.features.notes import note_sentences  # noqa: E402
from medfuse_core.features.text_backbone import MINILM_NAME, TextBackbone  # noqa: E402
from medfuse_core.features.text_finetune import add_lora, trainable_parameters  # noqa: E402
from medfuse_core.runtime.precision import mixed_precision  # noqa: E402
from medfuse_core.sources.synth import generate_patient  # noqa: E402
from tests.tiny_text_models import save_tiny_llama  # noqa: E402  (the tests' local model builder)

DECODERS = {"tiny": dict(hidden=32, layers=2, heads=2, intermediate=64),
            "small": dict(hidden=2048, layers=16, heads=16, intermediate=5632)}
PROMPT = 'Clinical note: "{text}" In one word:'


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lora_steps(backbone: TextBackbone, sentences: list[str], device: torch.device, steps: int, compiled: bool) -> dict:
    """Per-step seconds of LoRA fine-tuning on `sentences` (one batch), eager or compiled."""
    add_lora(backbone, rank=16, alpha=32, dropout=0.0, target_modules=None)
    backbone.to(device).train()
    head = torch.nn.Linear(backbone.embedding_dim, 11).to(device)
    params = trainable_parameters(backbone) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    forward = torch.compile(backbone.forward) if compiled else backbone.forward
    target = torch.randint(0, 2, (len(sentences), 11), device=device).float()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        enc = backbone.tokenize(sentences)
        with mixed_precision(device):
            logits = head(forward(enc["input_ids"], enc["attention_mask"])).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    warm = times[2:] if len(times) > 3 else times[-1:]
    step = statistics.median(warm)
    return {"compiled": compiled, "steps": steps, "first_steps_s": [round(t, 4) for t in times[:2]],
            "step_p50_s": step, "sentences_per_s": len(sentences) / step,
            "trainable_parameters": sum(p.numel() for p in params),
            "parameters": sum(p.numel() for p in backbone.model.parameters())}


def embed_throughput(backbone: TextBackbone, sentences: list[str], device: torch.device, batch_sizes: list[int]) -> list[dict]:
    backbone.to(device)
    rows = []
    for precision in ("fp32", "bf16"):
        for batch in batch_sizes:
            texts = (sentences * (1 + (2 * batch) // max(len(sentences), 1)))[: 2 * batch]
            with mixed_precision(device, precision):
                backbone.embed(texts[:batch], batch_size=batch)  # warm-up
                _sync(device)
                start = time.perf_counter()
                backbone.embed(texts, batch_size=batch)
                _sync(device)
            seconds = time.perf_counter() - start
            rows.append({"precision": precision, "batch_size": batch, "sentences_per_s": len(texts) / seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decoder", choices=sorted(DECODERS), default="small")
    parser.add_argument("--sentences", type=int, default=64, help="sentences per LoRA step")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--tiny", action="store_true", help="tiny decoder, few steps, small batches (a check)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.tiny:
        args.decoder, args.sentences, args.steps, args.batch_sizes = "tiny", 4, 2, "4"
    records = [generate_patient(3, i, image_size=32) for i in range(4 if args.tiny else 20)]
    corpus = list(dict.fromkeys(s.text for r in records for s in note_sentences(r.notes)))
    sentences = (corpus * (1 + args.sentences // max(len(corpus), 1)))[: args.sentences]
    compile_options = [False, True] if device.type == "cuda" else [False]  # compile does not pay on the CPU
    result: dict = {"device": str(device),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "sentences_per_step": args.sentences, "decoder": args.decoder,
                    "decoder_config": DECODERS[args.decoder], "decoder_lora": [], "minilm_lora": []}
    with tempfile.TemporaryDirectory() as tmp:
        dtype = torch.bfloat16 if device.type == "cuda" and args.decoder != "tiny" else torch.float32
        folder = save_tiny_llama(Path(tmp) / "decoder", corpus, **DECODERS[args.decoder], dtype=dtype)
        for compiled in compile_options:
            decoder = TextBackbone.from_pretrained(folder, pooling="last", max_tokens=64, prompt_template=PROMPT, dtype=dtype)
            result["decoder_lora"].append(lora_steps(decoder, sentences, device, args.steps, compiled))
            del decoder
    for compiled in compile_options:
        minilm = TextBackbone.from_pretrained(MINILM_NAME)
        result["minilm_lora"].append(lora_steps(minilm, sentences, device, args.steps, compiled))
    result["minilm_embed"] = embed_throughput(TextBackbone.from_pretrained(MINILM_NAME), corpus, device,
                                              [int(b) for b in args.batch_sizes.split(",")])
    best = max(result["minilm_embed"], key=lambda r: r["sentences_per_s"])
    result["minilm_embed_best"] = best
    for key in ("decoder_lora", "minilm_lora"):
        fastest = min(result[key], key=lambda r: r["step_p50_s"])
        result[f"{key}_compile_helps"] = bool(fastest["compiled"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "minilm_embed"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
