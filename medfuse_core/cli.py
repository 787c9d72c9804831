"""Command line: `python -m medfuse_core <command>`.

Bad data never produces a traceback here: loaders raise `DataError`, which is printed as one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from medfuse_core.problems import DataError, Severity
from medfuse_core.users import ROLES

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo_model"  # validate's default coverage model


def _cmd_synth(args: argparse.Namespace) -> int:
    from medfuse_core.sources.synth import generate_cohort, realism_named

    summary = generate_cohort(args.n, args.seed, Path(args.out), image_size=args.image_size, progress=not args.quiet,
                              realism=realism_named(args.realism))
    print(summary.describe())
    return 0


def _coverage_printer(args: argparse.Namespace):
    """A validate_tree callback printing each patient's coverage under the checkpoint's feature settings
    (one line; every unread row with -v); None when there is no checkpoint to measure against."""
    from medfuse_core.features.coverage import coverage
    from medfuse_core.features.featurize import FeatureSpec
    from medfuse_core.features.labs import LabVocabulary
    from medfuse_core.runtime.checkpoint import read_config

    folder = Path(args.checkpoint) if args.checkpoint else DEMO_CHECKPOINT
    if not (folder / "config.json").is_file():
        if args.checkpoint:
            print(f"error: --checkpoint: expected a run folder with config.json, found {folder}", file=sys.stderr)
        return None
    spec = FeatureSpec.from_dict(read_config(folder)["features"])
    vocabulary = LabVocabulary.from_dict(spec.lab_vocabulary)

    def show(report, record) -> None:
        cov = coverage(record, vocabulary, spec.hours, spec.timestep, spec.max_sentences)
        print(f"coverage: {cov.summary_line()}")
        if args.verbose:
            for modality in cov.modalities.values():
                if modality.unread:
                    print(f"  {modality.modality}: {modality.summary(spec.hours)}")
                for d in modality.details:
                    print(f"    {modality.modality}: {d['what']}{' at ' + d['time'] if d['time'] else ''}: {d['reason']}")

    return show


def _cmd_validate(args: argparse.Namespace) -> int:
    from medfuse_core.sources.validate import validate_tree

    show = None if args.errors_only else _coverage_printer(args)
    reports = validate_tree(args.path, on_record=show)
    n_errors = n_warnings = n_info = 0
    for report in reports:
        for problem in report.problems:
            if problem.severity is Severity.ERROR:
                n_errors += 1
            else:
                if problem.severity is Severity.INFO:
                    n_info += 1
                else:
                    n_warnings += 1
                if args.errors_only:
                    continue
            print(problem)
    infos = f", {n_info} info" if n_info else ""
    print(f"{len(reports)} bundle(s) checked: {n_errors} error(s), {n_warnings} warning(s){infos}")
    return 1 if n_errors else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from medfuse_core.demo import demo_cohort_dir

    print(demo_cohort_dir())
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from medfuse_core.sources.importer import import_meds, import_mimic3, import_mimic4

    if args.source == "fhir":
        from medfuse_core.sources.fhir import import_fhir

        if args.unit is not None:
            print("error: --unit: a FHIR import writes one bundle per patient file", file=sys.stderr)
            return 2
        fhir_summary = import_fhir(args.root, args.out, workers=args.workers, history=args.history,
                                   limit=args.limit, progress=not args.quiet)
        print(fhir_summary.describe())
        return 1 if any(p.severity is Severity.ERROR for p in fhir_summary.problems) else 0
    if args.source != "meds" and args.unit == "subject":
        print("error: --unit: MIMIC records are per admission or per ICU stay", file=sys.stderr)
        return 2
    if args.source == "mimic3":
        summary = import_mimic3(args.root, args.out, unit=args.unit or "admission", limit=args.limit,
                                progress=not args.quiet)
    elif args.source == "mimic4":
        summary = import_mimic4(args.root, args.out, unit=args.unit or "admission", limit=args.limit,
                                progress=not args.quiet, memory_limit=args.memory_limit)
    else:
        if args.unit == "icustay":
            print("error: --unit: MEDS records are per subject or per admission", file=sys.stderr)
            return 2
        summary = import_meds(args.root, args.out, unit=args.unit or "subject", limit=args.limit,
                              progress=not args.quiet, memory_limit=args.memory_limit)
    print(summary.describe())
    return 1 if any(p.severity is Severity.ERROR for p in summary.problems) else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from medfuse_core.train.run import run_training

    overrides = {k: v for k, v in {"epochs": args.epochs, "device": args.device, "seed": args.seed}.items() if v is not None}
    if args.quiet:
        overrides["progress"] = False
    result = run_training(args.data, args.out, args.config, overrides, image_encoder_data=args.image_encoder_data,
                          encoders_from=args.encoders_from)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"best epoch {result.best_epoch + 1}: validation macro-AUPRC {result.best_val_macro_auprc:.4f}; "
              f"checkpoint in {args.out}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from medfuse_core.score import score_cohort

    if not Path(args.checkpoint, "config.json").is_file():
        print(f"error: --checkpoint {args.checkpoint}: not a run folder (no config.json)", file=sys.stderr)
        return 2
    summary = score_cohort(args.checkpoint, args.data, args.out, batch_size=args.batch_size, workers=args.workers,
                           device=args.device, progress=not args.quiet)
    for folder, message in summary.no_data:
        print(f"no data: {folder}: {message}", file=sys.stderr)
    for folder, message in summary.failed:
        print(f"not scored: {folder}: {message}", file=sys.stderr)
    print(summary.describe())
    return 1 if summary.failed else 0  # a patient with nothing to score is an outcome, not a failure


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from medfuse_core.predictor import Predictor
    from medfuse_core.provenance import cohort_command, portable_path
    from medfuse_core.train.evaluate import evaluate
    from medfuse_core.train.run import SplitConfig, read_cohort, split_of

    predictor = Predictor.load(args.checkpoint, device=args.device)
    records = read_cohort(args.data, progress=not args.quiet)
    if args.split != "all":
        split = SplitConfig(**predictor.config["split"])
        records = [r for r in records if split_of(r.patient_id, split) == args.split]
    features, _ = predictor.featurizer.featurize_many(records, progress=not args.quiet)
    report = evaluate(predictor.model, features, predictor.config["calibration"], bootstrap=args.bootstrap)
    # portable: the report is shipped beside the checkpoint (medfuse_core/provenance.py)
    report = {"checkpoint": portable_path(args.checkpoint), "data": portable_path(args.data),
              **({"data_made_by": cohort_command(args.data)} if cohort_command(args.data) else {}),
              "split": args.split, **report}
    Path(args.out).write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    print(f"macro-AUROC {report['macro_auroc']:.4f} {report['ci95']['macro_auroc']}, "
          f"macro-AUPRC {report['macro_auprc']:.4f} {report['ci95']['macro_auprc']}, micro-F1 {report['micro_f1']:.4f}; "
          f"report in {args.out}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from medfuse_core.train.refit import calibrate_checkpoint

    if not Path(args.checkpoint, "config.json").is_file():
        print(f"error: --checkpoint {args.checkpoint}: not a run folder (no config.json)", file=sys.stderr)
        return 2
    if args.data is None and (args.domain or not args.intervals_data):
        print("error: --data (the training cohort) is needed for the calibration and --domain; "
              "--intervals-data alone refits only the conformal intervals", file=sys.stderr)
        return 2
    from medfuse_core.runtime.uncertainty import MIN_ROWS

    if args.min_rows is None:
        args.min_rows = MIN_ROWS
    config = calibrate_checkpoint(args.checkpoint, args.data, progress=not args.quiet, device=args.device,
                                  domain=args.domain, false_alarm_rate=args.false_alarm_rate,
                                  intervals_data=args.intervals_data, level=args.level, min_rows=args.min_rows)
    if args.data is not None:
        calibration = config["calibration"]
        methods = [entry["chosen"] for entry in calibration["selection"].values()]
        print(f"calibration refitted on {calibration['fitted_on']['patients']} validation patients "
              f"({methods.count('temperature')} label(s) by temperature, {methods.count('isotonic')} isotonic); "
              f"written to {Path(args.checkpoint) / 'config.json'}")
    if args.intervals_data:
        print(f"conformal intervals at {args.level:.0%} fitted on {config['uncertainty']['fitted_on']['patients']} "
              f"patients (crepes), written to {Path(args.checkpoint) / 'conformal.safetensors'}")
    for modality, entry in (config.get("domain") or {}).get("modalities", {}).items() if args.domain else ():
        print(f"domain of {modality}: {entry['n_train']} training patients, threshold {entry['threshold']:.2f} "
              f"({entry.get('val_flagged', float('nan')):.1%} of {entry['n_val']} validation patients flagged)")
    return 0


def _cmd_pretrain_labs(args: argparse.Namespace) -> int:
    from medfuse_core.train.pretrain_labs import run_pretrain_labs

    run_pretrain_labs(args.data, args.out, epochs=args.epochs, seed=args.seed)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    import json

    from medfuse_core.explain import explain
    from medfuse_core.numbers import json_safe
    from medfuse_core.predictor import NoDataError, Predictor
    from medfuse_core.sources.bundle import is_bundle, read_bundle

    for flag, path in (("--checkpoint", Path(args.checkpoint)), ("--patient", Path(args.patient))):
        if not path.is_dir():
            print(f"error: {flag} {path}: no such folder", file=sys.stderr)
            return 2
    if not is_bundle(Path(args.patient)):
        print(f"error: --patient {args.patient}: not a patient bundle (no patient.json)", file=sys.stderr)
        return 2
    predictor = Predictor.load(args.checkpoint, device=args.device)
    if args.label is not None and args.label not in predictor.labels:
        print(f"error: --label {args.label!r}: the checkpoint's labels are {', '.join(predictor.labels)}", file=sys.stderr)
        return 2
    record = read_bundle(args.patient)
    try:
        explanation = explain(record, predictor, labels=None if args.label is None else [args.label],
                              evidence=not args.no_evidence, image_method=args.image_method)
    except NoDataError as exc:  # nothing usable (or every modality out of the model's domain): no prediction
        # the state is an outcome, not a crash: the JSON says it (with the domain check and what was read), so a
        # script explaining a worklist gets one file per patient; the exit status 1 still tells a shell
        (no_data,) = predictor.predict([record])
        coverage = predictor.featurizer.coverage(record).leaving_out(no_data.domain.flagged)
        result = {**no_data.to_dict(), "coverage": coverage.to_dict()}
        _write_json(Path(args.out), json.dumps(json_safe(result), indent=2, allow_nan=False))
        print(f"{exc}; written to {args.out}", file=sys.stderr)
        return 1
    out = Path(args.out)
    _write_json(out, explanation.to_json())
    print(f"{record.patient_id}: {len(explanation.labels)} label(s) explained; written to {out}")
    return 0


def _write_json(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")


def _cmd_audit(args: argparse.Namespace) -> int:
    from medfuse_core.audit import AuditError, default_log_path, format_entry, rotate_key, tail, verify

    log = Path(args.log) if args.log else default_log_path()
    if args.action == "rotate-key":
        try:
            entry = rotate_key(log, user=os.environ.get("USER", "admin"))
        except AuditError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{log}: new key {entry['detail']['new_key_id']} (the rotation is entry seq {entry['seq']}, "
              f"signed with the old key {entry['detail']['old_key_id']})")
        return 0
    if args.action == "verify":
        result = verify(log)
        print(result.describe(), file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    for entry in tail(log, args.n):
        print(format_entry(entry))
    return 0


def _read_new_password(args: argparse.Namespace) -> str | None:
    """The password from stdin (one line) or typed twice at a prompt; None when the two differ."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"Password for {args.name}: ")
    return first if getpass.getpass("Again: ") == first else None


def _cmd_users(args: argparse.Namespace) -> int:

    from medfuse_core.users import USERS_ENV, add_user

    path = args.file or os.environ.get(USERS_ENV, "").strip()
    if not path:
        print(f"error: --file: no users file given (or set {USERS_ENV})", file=sys.stderr)
        return 2
    password = _read_new_password(args)
    if password is None:
        print("error: the two passwords differ; nothing written", file=sys.stderr)
        return 2
    user = add_user(path, args.name, args.role, password, replace=args.replace)
    print(f"{user.name} ({user.role}) written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medfuse_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic cohort of patient bundles with planted ground truth")
    synth.add_argument("--n", type=int, required=True, help="number of patients")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output folder (one bundle per patient)")
    synth.add_argument("--image-size", type=int, default=512)
    synth.add_argument("--realism", choices=("clean", "ward"), default="clean",
                       help="clean: every positive's evidence at full strength, labels right (the faithfulness "
                            "benchmark's world); ward: MIMIC-like prevalences, weak or absent evidence, mimics, "
                            "label noise (the demo's world)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_cmd_synth)

    validate = commands.add_parser("validate", help="check a bundle or a folder of bundles")
    validate.add_argument("path")
    validate.add_argument("--errors-only", action="store_true", help="print errors only")
    validate.add_argument("--checkpoint", help="run folder whose feature settings the coverage lines use "
                                               "(default: the demo model)")
    validate.add_argument("-v", "--verbose", action="store_true",
                          help="list every value the model does not read, with the reason")
    validate.set_defaults(run=_cmd_validate)

    importer = commands.add_parser("import", help="import an EHR extract as patient bundles")
    importer.add_argument("source", choices=["mimic3", "mimic4", "meds", "fhir"], help="kind of extract")
    importer.add_argument("--root", required=True, help="folder of MIMIC-III / MIMIC-IV tables (.csv, .csv.gz; "
                          "MIMIC-IV also .parquet), a MEDS dataset (data/*.parquet) or FHIR R4 Bundle JSON files "
                          "(one per patient)")
    importer.add_argument("--out", required=True, help="output folder (one bundle per record + cohort.json)")
    importer.add_argument("--unit", choices=["admission", "icustay", "subject"], default=None,
                          help="one record per hospital admission (MIMIC default), per ICU stay (MIMIC), or per "
                          "subject (MEDS default)")
    importer.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit (mimic4, meds)")
    importer.add_argument("--limit", type=int, default=None, help="import only the first N records")
    importer.add_argument("--quiet", action="store_true", help="no progress bar")
    importer.add_argument("--workers", type=int, default=1, help="processes reading FHIR files (fhir)")
    importer.add_argument("--history", action="store_true", help="fhir: keep every resource, not only those of the "
                          "index encounter")
    importer.set_defaults(run=_cmd_import)

    train = commands.add_parser("train", help="train the fusion model on a folder of bundles")
    train.add_argument("--data", required=True, help="folder of patient bundles with labels")
    train.add_argument("--out", required=True, help="run folder: config.json + model.safetensors (resumes if present)")
    train.add_argument("--config", help="JSON run config (model sections, train, split, image_size, text_model)")
    train.add_argument("--image-encoder-data", help="another folder of bundles whose films (train/val split alike) "
                       "join the image encoder's stage 1; the fusion trains on --data only")
    train.add_argument("--encoders-from", help="a checkpoint whose encoders are this run's stage 1 (trained no "
                       "further): stage 2 only, on the same model config")
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto | cpu | cuda")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a folder of bundles")
    evaluate.add_argument("--checkpoint", required=True, help="run folder written by train")
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--out", required=True, help="report JSON")
    evaluate.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                          help="evaluate only this split of the checkpoint's own split rule (default: all patients)")
    evaluate.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the 95%% intervals")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(run=_cmd_eval)

    calibrate = commands.add_parser("calibrate", help="refit a checkpoint's per-label calibration and thresholds on "
                                    "the validation split of its training cohort (no retraining)")
    calibrate.add_argument("--checkpoint", required=True, help="run folder written by train (its config.json is updated)")
    calibrate.add_argument("--data", help="the cohort the checkpoint was trained on (its validation split, by the "
                           "checkpoint's own split rule, is used); leave out to refit only the intervals")
    calibrate.add_argument("--domain", action="store_true", help="also fit the applicability domain per modality "
                           "(encoder outputs of the training split; thresholds on the validation split)")
    calibrate.add_argument("--false-alarm-rate", type=float, default=0.05,
                           help="--domain: the share of validation patients a modality's threshold may flag")
    calibrate.add_argument("--intervals-data", help="also fit the conformal intervals on every patient of this cohort "
                           "(another cohort than the training one, e.g. the validation cohort synth --n 500 --seed 3000); "
                           "alone, without --data, only the intervals are refit")
    calibrate.add_argument("--level", type=float, default=0.9, help="--intervals-data: the intervals' coverage level")
    calibrate.add_argument("--min-rows", type=int, default=None,
                           help="--intervals-data: pool Mondrian categories with fewer validation rows "
                                "(benchmarks/interval_min_rows.py chooses it; default: the demo's choice)")
    calibrate.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")
    calibrate.set_defaults(run=_cmd_calibrate)

    score = commands.add_parser("score", help="score a folder of bundles with a checkpoint into a Parquet file")
    score.add_argument("--checkpoint", required=True, help="run folder written by train")
    score.add_argument("--data", required=True, help="folder of patient bundles")
    score.add_argument("--out", required=True, help="Parquet file: one row per bundle (probabilities, logits, decisions)")
    score.add_argument("--batch-size", type=int, default=64)
    score.add_argument("--workers", type=int, default=0, help="DataLoader processes reading and featurizing bundles")
    score.add_argument("--device", default="auto", help="auto | cpu | cuda")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(run=_cmd_score)

    pretrain = commands.add_parser("pretrain-labs", help="masked lab-test (MAE) pretraining of the lab encoder")
    pretrain.add_argument("--data", required=True)
    pretrain.add_argument("--out", required=True)
    pretrain.add_argument("--epochs", type=int, default=20)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.set_defaults(run=_cmd_pretrain_labs)

    explain = commands.add_parser("explain", help="explain one patient's predictions (groups + evidence maps) as JSON")
    explain.add_argument("--checkpoint", required=True, help="run folder written by train")
    explain.add_argument("--patient", required=True, help="one patient bundle folder")
    explain.add_argument("--out", required=True, help="explanation JSON")
    explain.add_argument("--label", help="explain this label only (default: every label)")
    # the names of explain.evidence.IMAGE_METHODS / DEFAULT_IMAGE_METHOD (a test keeps them equal): the
    # parser is built without importing torch
    explain.add_argument("--image-method", choices=["gradcam_ig", "smoothed_ig", "gradcam", "ig"], default="gradcam_ig",
                         help="image evidence: Grad-CAM on a late stage x integrated gradients from the blurred film "
                              "(default), smoothed integrated gradients (two baselines), Grad-CAM alone, or plain "
                              "integrated gradients on the pixels")
    explain.add_argument("--no-evidence", action="store_true", help="probabilities and group contributions only")
    explain.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    explain.set_defaults(run=_cmd_explain)

    audit = commands.add_parser("audit", help="check or show the dashboard's audit log")
    audit.add_argument("action", choices=["verify", "tail", "rotate-key"],
                       help="verify: check the keyed chain and its anchor; tail: print the last entries; rotate-key: start signing with a new key (logged)")
    audit.add_argument("--log", help="the log file (default: $MEDFUSE_LENS_AUDIT_LOG, else audit.log in the cache "
                       "home)")
    audit.add_argument("-n", type=int, default=10, help="tail: number of entries")
    audit.set_defaults(run=_cmd_audit)

    users = commands.add_parser("users", help="manage the dashboard's local sign-in users")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    users_add = users_commands.add_parser("add", help="add a user (with --replace, reset one); asks for the password")
    users_add.add_argument("name")
    users_add.add_argument("--role", required=True, choices=list(ROLES))
    users_add.add_argument("--file", help="users file (JSON; created if missing; default $MEDFUSE_LENS_USERS)")
    users_add.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    users_add.add_argument("--replace", action="store_true", help="overwrite an existing user's role and password")
    users_add.set_defaults(run=_cmd_users)

    demo = commands.add_parser("demo", help="make sure the bundled demo cohort exists and print its folder")
    demo.set_defaults(run=_cmd_demo)
    return parser


def configure_logging(quiet: bool = False) -> None:
    """The library logs (logging.getLogger(__name__)); the CLI shows its progress lines on stderr,
    warnings only with --quiet. A caller that configured logging itself keeps its configuration."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logging.getLogger("medfuse_core").setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(quiet=bool(getattr(args, "quiet", False)))
    try:
        return args.run(args)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
