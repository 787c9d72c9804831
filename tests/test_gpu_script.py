"""benchmarks/gpu.sh: valid bash; without CUDA it says so and writes no GPU figure; its CPU fallback
runs the same scripts at tiny size and writes a report marked as a fallback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _env(tmp_path: Path) -> dict[str, str]:
    # CUDA hidden, so the test means the same thing on a machine with a GPU
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "GPU_SH_WORK": str(tmp_path / "work"),
            "OMP_NUM_THREADS": "1"}


def test_gpu_script_is_valid_bash() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    check = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_without_cuda_it_says_so_and_writes_no_gpu_figure(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "results" / "gpu.json"
    before = results.read_bytes() if results.exists() else None
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr
    assert "no CUDA device" in run.stdout and "was not written" in run.stdout
    assert (results.read_bytes() if results.exists() else None) == before
    bad = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr


def test_cpu_fallback_runs_the_scripts_at_tiny_size(tmp_path: Path) -> None:
    run = subprocess.run(["bash", str(SCRIPT), "--cpu-fallback"], capture_output=True, text=True, env=_env(tmp_path),
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads((tmp_path / "work" / "fallback" / "gpu.json").read_text())
    assert report["cpu_fallback"] is True and report["device"] == "cpu"
    lm = report["notes_language_model"]
    for key in ("decoder_lora", "minilm_lora"):
        assert [row["compiled"] for row in lm[key]] == [False]  # no torch.compile on the CPU
        assert lm[key][0]["step_p50_s"] > 0 and 0 < lm[key][0]["trainable_parameters"] < lm[key][0]["parameters"]
    assert "CPU fallback" in (tmp_path / "work" / "fallback" / "gpu.md").read_text()
