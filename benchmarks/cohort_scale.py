"""Reader scale: the MIMIC-IV reader's vitals extraction over a large synthetic chartevents table.

Writes a chartevents.csv.gz in the MIMIC-IV layout (20 million rows by default) with DuckDB SQL
(`COPY (SELECT ... FROM range(N)) TO ...`, so generation is fast and bounded), plus matching
icustays / admissions, then reads every ICU stay's record with `Mimic4Reader` (vitals through
`vitals_from_table`) and measures wall time and peak RSS. Rows are spread over the stays in a
shuffled order, so the reader's SQL sort does real work. The MIMIC-III reader is timed on the shared
demo for comparison. Each phase runs in a fresh process, so its peak RSS (ru_maxrss) is its own.
Writes benchmarks/results/cohort_scale.json and cohort_scale.md.

    python benchmarks/cohort_scale.py [--rows 20000000] [--rows-per-stay 2000] [--memory-limit 1GB]
                                      [--threads 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from medfuse_core.provenance import scrub_paths
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "mimic-iii-demo"
MAX_RSS_GB = 4.0  # requirement: peak memory well under this

# (itemid, value SQL over k = row index): 12 items of the vitals map, 4 that are not vitals
_ITEMS = [
    (220045, "CAST(60 + k % 70 AS VARCHAR)"),  # heart rate
    (220179, "CAST(90 + k % 60 AS VARCHAR)"),  # NIBP systolic
    (220180, "CAST(50 + k % 40 AS VARCHAR)"),  # NIBP diastolic
    (220181, "CAST(65 + k % 30 AS VARCHAR)"),  # NIBP mean
    (220210, "CAST(12 + k % 20 AS VARCHAR)"),  # respiratory rate
    (220277, "CAST(88 + k % 12 AS VARCHAR)"),  # SpO2
    (223761, "CAST(97.0 + (k % 40) / 10.0 AS VARCHAR)"),  # temperature F
    (220739, "CASE k % 3 WHEN 0 THEN 'Spontaneously' WHEN 1 THEN 'To Speech' ELSE 'To Pain' END"),
    (223900, "CASE k % 2 WHEN 0 THEN 'Oriented' ELSE 'Confused' END"),
    (223901, "'Obeys Commands'"),
    (225664, "CAST(80 + k % 150 AS VARCHAR)"),  # glucose finger stick
    (223835, "CAST(21 + k % 60 AS VARCHAR)"),  # FiO2 (percent)
    (220048, "'SR (Sinus Rhythm)'"),  # heart rhythm: not a channel
    (224650, "'None'"),  # ectopy type
    (220046, "'120'"),  # HR alarm high
    (224082, "'Left Side'"),  # turn
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def generate(root: Path, rows: int, rows_per_stay: int, threads: int) -> dict:
    import duckdb

    start = time.perf_counter()
    stays = max(1, rows // rows_per_stay)
    (root / "icu").mkdir(parents=True, exist_ok=True)
    (root / "hosp").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET memory_limit = '1GB'")
    ids = ("10000000 + s AS subject_id, 20000000 + s AS hadm_id, 30000000 + s AS stay_id, "
           "TIMESTAMP '2110-01-01' + to_days(CAST((s % 5000) * 7 AS INTEGER)) AS intime")
    con.execute(f"COPY (SELECT subject_id, hadm_id, stay_id, 'MICU' AS first_careunit, 'MICU' AS last_careunit, "
                f"intime, intime + INTERVAL 5 DAY AS outtime, 5.0 AS los FROM (SELECT range AS s, {ids} FROM "
                f"range({stays}))) TO '{root / 'icu' / 'icustays.csv.gz'}' (HEADER, COMPRESSION gzip)")
    con.execute(f"COPY (SELECT subject_id, hadm_id, intime - INTERVAL 6 HOUR AS admittime, "
                f"intime + INTERVAL 6 DAY AS dischtime, CAST(s % 9 = 0 AS INTEGER) AS hospital_expire_flag "
                f"FROM (SELECT range AS s, {ids} FROM range({stays}))) TO '{root / 'hosp' / 'admissions.csv.gz'}' "
                "(HEADER, COMPRESSION gzip)")
    itemids = "[" + ", ".join(str(i) for i, _ in _ITEMS) + "]"
    value = "CASE k % 16 " + " ".join(f"WHEN {n} THEN {v}" for n, (_, v) in enumerate(_ITEMS)) + " END"
    # row k goes to stay (k * 7919) % stays (a shuffle, as stays interleave in a real file) at minute k // stays
    chart = (f"SELECT 10000000 + s AS subject_id, 20000000 + s AS hadm_id, 30000000 + s AS stay_id, "
             f"1000 + k % 50 AS caregiver_id, strftime(TIMESTAMP '2110-01-01' + to_days(CAST((s % 5000) * 7 AS INTEGER)) "
             f"+ to_minutes(CAST(k // {stays} AS BIGINT) * 2), '%Y-%m-%d %H:%M:%S') AS charttime, "
             f"'' AS storetime, {itemids}[k % 16 + 1] AS itemid, {value} AS value, "
             f"TRY_CAST({value} AS DOUBLE) AS valuenum, '' AS valueuom, 0 AS warning "
             f"FROM (SELECT range AS k, (range * 7919) % {stays} AS s FROM range({rows}))")
    chart_path = root / "icu" / "chartevents.csv.gz"
    con.execute(f"COPY ({chart}) TO '{chart_path}' (HEADER, COMPRESSION gzip)")
    con.close()
    return {"rows": rows, "stays": stays, "seconds": round(time.perf_counter() - start, 1),
            "chartevents_mb": round(chart_path.stat().st_size / 1e6, 1), "peak_rss_mb": round(_rss_mb(), 1)}


def read_mimic4(root: Path, memory_limit: str, threads: int, temp_dir: Path) -> dict:
    from medfuse_core.sources.mimic4 import Mimic4Reader

    start = time.perf_counter()
    reader = Mimic4Reader(root, "icustay", memory_limit=memory_limit, threads=threads, temp_dir=temp_dir)
    n_records = n_vitals = 0
    channels: dict[str, int] = {}
    first_record_s = None
    for record in reader:
        if first_record_s is None:
            first_record_s = time.perf_counter() - start
        n_records += 1
        n_vitals += len(record.vitals.table)
        for name, count in record.vitals.table["channel"].value_counts().items():
            channels[name] = channels.get(name, 0) + int(count)
    seconds = time.perf_counter() - start
    memory_limit_setting = reader.con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    reader.close()
    return {"records": n_records, "vital_rows_out": n_vitals,
            "vital_rows_in": reader.stats.vital_rows_from_chartevents, "channels": channels,
            "seconds": round(seconds, 1), "first_record_s": round(first_record_s or 0.0, 1),
            "rows_per_s": round(reader.stats.vital_rows_from_chartevents / seconds),
            "peak_rss_mb": round(_rss_mb(), 1), "duckdb_memory_limit": memory_limit_setting,
            "reader_problems": [str(p) for p in reader.problems][:20],
            "duckdb_threads": threads}


def read_mimic3(demo: Path) -> dict:
    from medfuse_core.sources.mimic3 import Mimic3Reader

    start = time.perf_counter()
    records = list(Mimic3Reader(demo))
    seconds = time.perf_counter() - start
    return {"records": len(records), "lab_rows_out": sum(len(r.labs.table) for r in records),
            "vital_rows_out": sum(len(r.vitals.table) for r in records), "seconds": round(seconds, 1),
            "peak_rss_mb": round(_rss_mb(), 1)}


def _phase(*args: str) -> dict:
    """Run one phase of this script in a fresh process; its JSON result."""
    done = subprocess.run([sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--rows-per-stay", type=int, default=2000)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory limit of the reader")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", default=None, help="generate into (and keep) this folder; reused if present")
    parser.add_argument("--phase", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        kind, *rest = args.phase
        if kind == "generate":
            out = generate(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "mimic4":
            out = read_mimic4(Path(rest[0]), rest[1], int(rest[2]), Path(rest[3]))
        else:
            out = read_mimic3(Path(rest[0]))
        print(json.dumps(out))
        return

    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cohort-scale-"))
    root, spill = scratch / "mimic4", scratch / "duckdb_tmp"
    try:
        marker = root / "icu" / "chartevents.csv.gz"
        generated = None
        if not marker.exists():
            generated = _phase("generate", str(root), str(args.rows), str(args.rows_per_stay), str(args.threads))
            print(f"generated: {generated}", flush=True)
        mimic4 = _phase("mimic4", str(root), args.memory_limit, str(args.threads), str(spill))
        print(f"mimic4: {mimic4}", flush=True)
        mimic3 = _phase("mimic3", str(DEMO)) if DEMO.is_dir() else None
        print(f"mimic3: {mimic3}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    import duckdb

    result = {
        "benchmark": "cohort_scale",
        "rows": args.rows, "rows_per_stay": args.rows_per_stay,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__,
        "generate": generated, "mimic4_icustay_vitals": mimic4, "mimic3_demo": mimic3,
        "max_rss_gb": MAX_RSS_GB,
        "meets_requirement": mimic4["peak_rss_mb"] < MAX_RSS_GB * 1024,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cohort_scale.json").write_text(scrub_paths(json.dumps(result, indent=2) + "\n"))
    gen = f"{generated['seconds']:.0f} s, {generated['chartevents_mb']:.0f} MB gz" if generated else "reused"
    lines = [
        "# Reader scale: MIMIC-IV chartevents -> vitals",
        "",
        f"{args.rows:,} synthetic chartevents rows (MIMIC-IV layout, 16 itemids, 12 of them vitals channels) over "
        f"{mimic4['records']:,} ICU stays; generation {gen}. {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, memory limit {mimic4['duckdb_memory_limit']}, "
        f"{args.threads} threads. Each phase in its own process; peak RSS is ru_maxrss.",
        "",
        "| reader | records | rows in | rows out | wall s | first record s | rows/s | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| Mimic4Reader icustay (vitals) | {mimic4['records']:,} | {mimic4['vital_rows_in']:,} | "
        f"{mimic4['vital_rows_out']:,} | {mimic4['seconds']:.1f} | {mimic4['first_record_s']:.1f} | "
        f"{mimic4['rows_per_s']:,} | {mimic4['peak_rss_mb']:.0f} |",
    ]
    if mimic3:
        lines.append(f"| Mimic3Reader admission (MIMIC-III demo, all modalities) | {mimic3['records']:,} | | "
                     f"{mimic3['lab_rows_out'] + mimic3['vital_rows_out']:,} | {mimic3['seconds']:.1f} | | | "
                     f"{mimic3['peak_rss_mb']:.0f} |")
    lines += ["", f"Peak RSS under {MAX_RSS_GB:g} GB: {'yes' if result['meets_requirement'] else 'NO'}", ""]
    (RESULTS / "cohort_scale.md").write_text(scrub_paths("\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
