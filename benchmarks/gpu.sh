#!/usr/bin/env bash
# The GPU path end to end, on one CUDA device: training throughput, the full review latency
# (goal <= 100 ms per patient on an H100-class card with the MiniLM backbone) and LoRA fine-tuning
# steps of a decoder LLM and MiniLM (eager vs torch.compile, bf16 autocast), folded into
# benchmarks/results/gpu.json + gpu.md with the card named.
#
#   bash benchmarks/gpu.sh                  # on a CUDA machine, from anywhere
#   bash benchmarks/gpu.sh --cpu-fallback   # without CUDA: the same scripts at tiny size on the CPU,
#                                           # written to $GPU_SH_WORK/fallback (never to gpu.json)
#
# Without a CUDA device it says so and exits 0 without writing anything under benchmarks/results:
# GPU figures are only ever measured on a GPU.
# Environment: PYTHON (default python), GPU_SH_WORK (default a new temporary folder),
# GPU_SH_PATIENTS (synthetic cohort size, default 600), GPU_SH_DECODER (small | tiny, default small).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
WORK="${GPU_SH_WORK:-$(mktemp -d -t medfuse-gpu-XXXXXX)}"
PATIENTS="${GPU_SH_PATIENTS:-600}"
DECODER="${GPU_SH_DECODER:-small}"
FALLBACK=0
for arg in "$@"; do
  case "$arg" in
    --cpu-fallback) FALLBACK=1 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$arg' (expected --cpu-fallback or --help)" >&2; exit 2 ;;
  esac
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 MEDFUSE_LENS_HOME="$WORK/home"
mkdir -p "$WORK"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu.sh: no CUDA device is visible to torch on this machine; no GPU figure was measured and"
  echo "        benchmarks/results/gpu.json was not written. Run it on a CUDA machine."
  if [[ "$FALLBACK" != 1 ]]; then
    exit 0
  fi
  echo "gpu.sh: --cpu-fallback: the same scripts at tiny size on the CPU, into $WORK/fallback"
  mkdir -p "$WORK/fallback"
  "$PYTHON" benchmarks/notes_lm_step.py --tiny --device cpu --out "$WORK/fallback/notes_lm_step.json"
  "$PYTHON" benchmarks/gpu_report.py --fallback --lm "$WORK/fallback/notes_lm_step.json" \
      --out "$WORK/fallback/gpu.json"
  echo "gpu.sh: CPU fallback written to $WORK/fallback/gpu.json (not a GPU figure)"
  exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "gpu.sh: synthetic cohorts ($PATIENTS patients for training, 100 held out) in $WORK"
"$PYTHON" -m medfuse_core synth --n "$PATIENTS" --seed 2026 --out "$WORK/cohort" --image-size 512 >/dev/null
"$PYTHON" -m medfuse_core synth --n 100 --seed 7 --out "$WORK/heldout" --image-size 512 >/dev/null

echo "gpu.sh: training throughput and review latency (benchmarks/performance.py on cuda, the demo checkpoint)"
"$PYTHON" benchmarks/performance.py --checkpoint assets/demo_model --data "$WORK/heldout" --cohort "$WORK/cohort" \
    --sections latency,training --device cuda --train-patients "$PATIENTS" --train-batch-size 256 --threads 4 \
    --out-dir "$WORK/performance"

echo "gpu.sh: notes language model: LoRA steps ($DECODER decoder, MiniLM), compile on/off, embedding batch sizes"
"$PYTHON" benchmarks/notes_lm_step.py --device cuda --decoder "$DECODER" --out "$WORK/notes_lm_step.json"

"$PYTHON" benchmarks/gpu_report.py --performance "$WORK/performance/performance.json" --lm "$WORK/notes_lm_step.json" \
    --out benchmarks/results/gpu.json
echo "gpu.sh: wrote benchmarks/results/gpu.json and gpu.md"
