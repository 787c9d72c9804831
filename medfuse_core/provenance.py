"""How shipped files name the folders they came from, without naming the machine that built them.

A checkpoint's config.json, an eval report and every benchmark result are shipped with the
repository, so an absolute path of the build machine in them (`/home/alice/data/train2000`) says
nothing to anyone else and leaks a detail of that machine. A folder is recorded instead as a path
relative to the repository (or to the working directory) when it lies inside it, and a synthetic
cohort also as the command that makes it again (`synth --n 2000 --seed 1000`), read from its
cohort.json. tests/test_shipped_paths.py scans the shipped files for absolute paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# An absolute path of a machine: a POSIX path under a usual top folder, a home folder, or a drive letter.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~$\-])/(?:home|root|Users|work|tmp|var|mnt|srv|opt|data|scratch|media|private)/[^\s\"'`)|,]*"
    r"|(?<![\w])[A-Za-z]:\\[^\s\"']+")


def portable_path(path: str | Path | None) -> str:
    """`path` as a shipped file may record it: relative to the repository or the working directory
    when inside either, else the folder's name alone (never an absolute path). '' for None/''."""
    if path is None or str(path) == "":
        return ""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    resolved = p.resolve()
    for root in (REPO_ROOT, Path.cwd().resolve()):
        try:
            return resolved.relative_to(root).as_posix() or "."
        except ValueError:
            continue
    shared = REPO_ROOT.parent / "shared"  # the documented sibling of the repository (../shared/data)
    if resolved.is_relative_to(shared):
        return "../shared/" + resolved.relative_to(shared).as_posix()
    # any other folder, a temporary one beside a clone included, is named alone: a '../' path to it would
    # depend on where the repository happened to be cloned
    return resolved.name


def cohort_command(path: str | Path | None) -> str | None:
    """'synth --n 2000 --seed 1000' (and '--realism ward' for a ward cohort) when `path` is a cohort
    written by `synth` (its cohort.json says the generator, n, seed and realism), else None."""
    if not path:
        return None
    cohort_file = Path(path) / "cohort.json"
    try:
        meta = json.loads(cohort_file.read_text()) if cohort_file.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not str(meta.get("generator_version", "")).startswith("synth"):
        return None
    if "n" not in meta or "seed" not in meta:
        return None
    realism = meta.get("realism")
    setting = f" --realism {realism['name']}" if isinstance(realism, dict) and isinstance(realism.get("name"), str) else ""
    return f"synth --n {int(meta['n'])} --seed {int(meta['seed'])}{setting}"


def data_provenance(path: str | Path | None) -> dict[str, Any]:
    """{'path': portable path, 'made_by': command (synthetic cohorts only)} for a config or report."""
    out: dict[str, Any] = {"path": portable_path(path)}
    command = cohort_command(path)
    if command:
        out["made_by"] = command
    return out


def absolute_paths(text: str) -> list[str]:
    """The absolute machine paths in `text` (the shipped-files test and the benchmark writers use it)."""
    return [m.group(0) for m in ABSOLUTE_PATH.finditer(text)]


def scrub_paths(text: str) -> str:
    """`text` with every absolute machine path replaced by its portable form (benchmark writers pass
    their JSON and markdown through this, so a result never names the machine it ran on)."""
    # the repository's own folder and its ../shared sibling first, by their literal text: a clone may sit
    # under any top folder (CI clones into one the pattern below does not know), and still nothing of it
    # may be shipped
    for root, as_folder, as_prefix in ((REPO_ROOT.parent / "shared", "../shared", "../shared/"),
                                       (REPO_ROOT, ".", "")):
        prefix = re.escape(root.as_posix())
        text = re.sub(prefix + "/", as_prefix, text)
        text = re.sub(prefix + r"(?![\w.\-])", as_folder, text)
    return ABSOLUTE_PATH.sub(lambda m: _portable_or_marker(m.group(0)), text)


def _portable_or_marker(path: str) -> str:
    if "\\" in path:  # a Windows path: keep the last part only
        return path.rstrip("\\").split("\\")[-1]
    tail = ""
    while path.endswith((".", ":", ";")):  # sentence punctuation is not part of the path
        path, tail = path[:-1], path[-1] + tail
    return portable_path(path) + tail


def write_benchmark_result(out_dir: str | Path, name: str, result: Any, markdown: str, allow_nan: bool = True) -> None:
    """`<name>.json` and `<name>.md` in `out_dir` (made if missing), both through `scrub_paths`: the one way
    every script in benchmarks/ writes what it measured."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(scrub_paths(json.dumps(result, indent=1, allow_nan=allow_nan) + "\n"),
                                      encoding="utf-8")
    (out / f"{name}.md").write_text(scrub_paths(markdown), encoding="utf-8")
