"""`python -m medfuse_core train`: bundles -> split -> features -> model -> run folder.

The split is by patient id (a hash with the split seed), so it does not depend on the order the
bundles are listed in and a patient never lands in two splits. The run folder is a complete
checkpoint: `config.json` holds the model config, the fitted feature spec, the split, the
calibration fitted on validation and the training summary; `model.safetensors` the weights.

Under `torchrun --nproc_per_node=N -m medfuse_core train ...` every rank reads and featurizes the
cohort (rank 0 first, so the others find its sentence embeddings in the cache) and trains its share
of every batch (train/distributed.py); rank 0 alone fits the calibration and writes the run folder.
"""

from __future__ import annotations

import logging
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from medfuse_core.runtime.cache import cache_home
from medfuse_core.features.featurize import FeatureSpec, Featurizer
from medfuse_core.models.baselines import build_model
from medfuse_core.models.config import MOVED_SECTIONS, RETIRED_FIELDS, SECTION_TYPES, ModelConfig, NoteEncoderConfig
from medfuse_core.features.text_backbone import POOLINGS, check_prompt_template
from medfuse_core.problems import DataError
from medfuse_core.provenance import data_provenance
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import find_bundles, read_bundle
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.train import distributed
from medfuse_core.train.encoder_pretrain import ExtraRows
from medfuse_core.train.evaluate import fit_calibration
from medfuse_core.runtime.device import resolve_device
from medfuse_core.train.loop import TrainConfig, TrainResult, seed_everything, train
from medfuse_core.train.notes_finetune import NotesTrainConfig, finetune_notes
from medfuse_core.train.objective import LossConfig, variant_loss

logger = logging.getLogger(__name__)


@dataclass
class SplitConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0


@dataclass
class RunConfig:
    """Everything a training run reads from `--config FILE` (JSON); every field has a default."""

    model: dict[str, Any] = field(default_factory=dict)  # partial ModelConfig sections
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (the objective's weights: train.loss)
    split: dict[str, Any] = field(default_factory=dict)  # SplitConfig fields
    image_size: int = 128
    text_model: str = "all-MiniLM-L6-v2"
    max_sentences: int = 64

    @classmethod
    def from_file(cls, path: str | Path | None) -> "RunConfig":
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(str(path), "", "expected an existing JSON config file") from None
        except json.JSONDecodeError as exc:
            raise DataError(str(path), f"line {exc.lineno}", f"expected valid JSON: {exc.msg}") from None
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise DataError(str(path), sorted(unknown)[0], f"unknown key; expected some of {sorted(cls.__dataclass_fields__)}")
        run = cls(**data)
        problem = run.unread_setting()
        if problem is not None:
            raise DataError(str(path), *problem)
        return run

    def unread_setting(self) -> tuple[str, str] | None:
        """(field, message) of the first setting the run would not read (unknown, or owned by another
        setting and overwritten), else None: a setting that is silently ignored is an error."""
        for name, value in sorted(self.model.items()):
            if name in RUN_DERIVED:
                return f"model.{name}", f"set by the run from {RUN_DERIVED[name]}; remove it"
            if name in MOVED_SECTIONS:
                return f"model.{name}", f"a training setting, not the model's: move it to {MOVED_SECTIONS[name]}"
            if name not in MODEL_SECTIONS:
                return f"model.{name}", f"unknown section; expected some of {sorted(MODEL_SECTIONS)}"
            section = SECTION_TYPES.get(name)
            if section is None or not isinstance(value, dict):
                continue
            known = set(section.__dataclass_fields__)
            for key in sorted(value):
                where = f"model.{name}.{key}"
                if where in RUN_DERIVED:
                    return where, f"set by the run from {RUN_DERIVED[where]}; remove it"
                if key in RETIRED_FIELDS.get(name, {}):
                    return where, f"not read by the model; set {RETIRED_FIELDS[name][key]}"
                if key not in known:
                    return where, f"unknown setting; expected some of {sorted(known)}"
        for name, config_type in (("train", TrainConfig), ("split", SplitConfig)):
            unknown = sorted(set(getattr(self, name)) - set(config_type.__dataclass_fields__))
            if unknown:
                return f"{name}.{unknown[0]}", f"unknown setting; expected some of {sorted(config_type.__dataclass_fields__)}"
        for name, section_type in (("loss", LossConfig), ("notes", NotesTrainConfig)):
            section = self.train.get(name)
            if section is None:
                continue
            if not isinstance(section, dict):
                return f"train.{name}", f"expected an object of {section_type.__name__} fields"
            unknown = sorted(set(section) - set(section_type.__dataclass_fields__))
            if unknown:
                return (f"train.{name}.{unknown[0]}",
                        f"unknown setting; expected some of {sorted(section_type.__dataclass_fields__)}")
        return None


# model settings a run derives from the data and the feature spec (build_model_config): a value in the
# run config would be overwritten, so it is refused and the owner named
RUN_DERIVED = {
    "labels": "the cohort's labels (cohort.json or patient.json)",
    "modalities": "the registered modalities (medfuse_core/modalities.py)",
    "model.labs.vocab_size": "the lab vocabulary fitted on the training split",
    "model.notes.embedding_dim": "the text model (top-level text_model)",
    "model.notes.text_model": "the top-level text_model",
    "model.notes.max_sentences": "the top-level max_sentences",
}
MODEL_SECTIONS = set(ModelConfig.__dataclass_fields__)


def split_of(patient_id: str, split: SplitConfig) -> str:
    """'train' | 'val' | 'test' from a hash of the id: stable across runs, orderings and machines."""
    digest = hashlib.sha256(f"{split.seed}:{patient_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < split.test_fraction:
        return "test"
    if u < split.test_fraction + split.val_fraction:
        return "val"
    return "train"


def read_cohort(data_dir: str | Path, progress: bool = True, films_only: bool = False) -> list[PatientRecord]:
    """Every readable bundle under `data_dir` (unreadable ones are reported and skipped);
    `films_only` as `read_bundle`."""
    records = []
    for folder in tqdm(find_bundles(Path(data_dir)), desc="reading bundles", disable=not progress, leave=False):
        try:
            records.append(read_bundle(folder, films_only))
        except DataError as exc:
            logger.warning("skipped: %s", exc)
    if not records:
        raise DataError(str(data_dir), "", "expected patient bundles (folders with patient.json); found none")
    return records


def cohort_labels(data_dir: Path, records: Sequence[PatientRecord]) -> list[str]:
    """Label names from cohort.json when the cohort says them, else every label seen, in first-seen order."""
    cohort_file = Path(data_dir) / "cohort.json"
    if cohort_file.is_file():
        names = json.loads(cohort_file.read_text()).get("labels") or json.loads(cohort_file.read_text()).get("label_names")
        if names:
            return list(names)
    seen: dict[str, None] = {}
    for r in records:
        for name in (r.labels or {}):
            seen.setdefault(name)
    if not seen:
        raise DataError(str(data_dir), "labels", "expected labels in patient.json of the training bundles; found none")
    return list(seen)


def notes_settings(run: RunConfig) -> NoteEncoderConfig:
    """How the notes model reads a sentence: the run config's `model.notes` section (pooling, max_tokens,
    prompt_template), checked, with the top-level `text_model` (its one owner)."""
    section = {**dict(run.model.get("notes") or {}), "text_model": run.text_model}
    try:
        notes = NoteEncoderConfig(**section)
    except TypeError as exc:
        raise DataError("run config", "model.notes", f"expected NoteEncoderConfig fields ({exc})") from None
    if notes.pooling not in POOLINGS:
        raise DataError("run config", "model.notes.pooling", f"expected one of {', '.join(POOLINGS)}; found {notes.pooling!r}")
    if not isinstance(notes.max_tokens, int) or notes.max_tokens < 1:
        raise DataError("run config", "model.notes.max_tokens", f"expected a positive integer; found {notes.max_tokens!r}")
    try:
        check_prompt_template(notes.prompt_template, "model.notes.prompt_template")
    except ValueError as exc:
        raise DataError("run config", "model.notes.prompt_template", str(exc)) from None
    return notes


def build_model_config(run: RunConfig, featurizer: Featurizer, labels: list[str]) -> ModelConfig:
    sections = dict(run.model)
    config = ModelConfig.from_dict({k: v for k, v in sections.items() if k != "labels"})
    config.labels = list(labels)
    config.labs.vocab_size = featurizer.vocabulary.size
    config.notes.embedding_dim = featurizer.spec.text_dim
    config.notes.text_model = featurizer.spec.text_model
    config.notes.pooling = featurizer.spec.pooling
    config.notes.max_tokens = featurizer.spec.max_tokens
    config.notes.prompt_template = featurizer.spec.prompt_template
    config.notes.max_sentences = featurizer.spec.max_sentences
    config.modalities = list(featurizer.spec.modalities)  # the featurised modalities, in the same order
    return config


@dataclass
class PreparedData:
    """A cohort read, split and featurized once; several runs (a loss sweep) can train on it."""

    data_dir: Path
    labels: list[str]
    parts: dict[str, list[PatientRecord]]
    featurizer: Featurizer
    train_set: list
    val_set: list


def prepare_data(data_dir: str | Path, run: RunConfig, split: SplitConfig, progress: bool = True,
                 text_device_map: str | None = None, embed_batch_size: int = 32) -> PreparedData:
    data_dir = Path(data_dir)
    records = read_cohort(data_dir, progress)
    labels = cohort_labels(data_dir, records)
    parts: dict[str, list[PatientRecord]] = {"train": [], "val": [], "test": []}
    for r in records:
        parts[split_of(r.patient_id, split)].append(r)
    if not parts["train"] or not parts["val"]:
        raise DataError(str(data_dir), "", f"expected enough patients for train and validation splits; got "
                        f"{len(parts['train'])} train, {len(parts['val'])} val")
    notes = notes_settings(run)
    featurizer = Featurizer.fit(parts["train"], labels, image_size=run.image_size, text_model=notes.text_model,
                                pooling=notes.pooling, max_tokens=notes.max_tokens, prompt_template=notes.prompt_template,
                                max_sentences=run.max_sentences, cache_dir=cache_home() / "embeddings",
                                text_device_map=text_device_map, embed_batch_size=embed_batch_size)
    train_set, _ = featurizer.featurize_many(parts["train"], progress)
    val_set, _ = featurizer.featurize_many(parts["val"], progress)
    return PreparedData(data_dir, labels, parts, featurizer, train_set, val_set)


def film_rows(data_dir: str | Path, featurizer: Featurizer, split: SplitConfig, progress: bool = True) -> ExtraRows:
    """The films (and labels) of another cohort's train and val patients, split like the main cohort,
    for the image encoder's stage 1 (`ExtraRows`); the other modalities are not read."""
    parts: dict[str, list[PatientRecord]] = {"train": [], "val": [], "test": []}
    for r in read_cohort(data_dir, progress, films_only=True):
        if r.images:
            parts[split_of(r.patient_id, split)].append(r)
    if not parts["train"]:
        raise DataError(str(data_dir), "images", "expected films in the training split of the image-encoder cohort; found none")
    return ExtraRows(featurizer.featurize_many(parts["train"], progress)[0], featurizer.featurize_many(parts["val"], progress)[0])


def run_training(data_dir: str | Path, out_dir: str | Path, config_path: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, prepared: PreparedData | None = None,
                 image_encoder_data: str | Path | None = None, encoders_from: str | Path | None = None) -> TrainResult:
    """The `train` command. `prepared`: data already read and featurized with the same run config.
    `image_encoder_data`: another cohort whose films join the image encoder's stage 1 (`film_rows`).
    `encoders_from`: a checkpoint whose encoders this run takes as its stage 1 (`seed_encoders`).
    Under torchrun (RANK / WORLD_SIZE in the environment) it trains data-parallel across the ranks."""
    run = RunConfig.from_file(config_path)
    train_config = TrainConfig.from_dict({**run.train, **(overrides or {})})
    split = SplitConfig(**run.split)
    out_dir = Path(out_dir)
    world = distributed.world_from_env()
    world.local_batch_size(train_config.batch_size)  # before any work: the global batch must split evenly
    device = distributed.setup(world, resolve_device(train_config.device))
    try:
        result = _run_training(data_dir, out_dir, run, train_config, split, prepared, world, device, image_encoder_data,
                               encoders_from)
    except BaseException:
        distributed.shutdown(world, wait=False)  # no barrier the other ranks may never reach
        raise
    distributed.shutdown(world)
    return result


def _run_training(data_dir: str | Path, out_dir: Path, run: RunConfig, train_config: TrainConfig, split: SplitConfig,
                  prepared: PreparedData | None, world: distributed.World, device: torch.device,
                  image_encoder_data: str | Path | None = None, encoders_from: str | Path | None = None) -> TrainResult:
    if image_encoder_data and encoders_from:
        raise DataError(str(image_encoder_data), "--image-encoder-data",
                        "the encoders come from --encoders-from; an image-encoder cohort would not be used")
    if image_encoder_data and train_config.encoder_epochs <= 0:
        raise DataError(str(image_encoder_data), "train.encoder_epochs",
                        "an image-encoder cohort needs training stage 1 (encoder_epochs > 0); the run config has none")
    progress = train_config.progress and world.is_main
    notes_tuning = train_config.notes
    if notes_tuning.finetune != "none" and (train_config.encoder_epochs <= 0 or world.size > 1):
        raise DataError("run config", "train.notes.finetune",
                        "fine-tuning the notes model runs in training stage 1 in one process: expected "
                        "train.encoder_epochs > 0 and no torchrun")
    with world.main_first():
        data = prepared or prepare_data(data_dir, run, split, progress, notes_tuning.device_map,
                                        notes_tuning.embed_batch_size)
    featurizer, parts, labels = data.featurizer, data.parts, data.labels
    train_set, val_set = data.train_set, data.val_set
    if notes_tuning.finetune != "none" and prepared is not None:
        # the fine-tuned backbone goes on this run's own featurizer, never on the shared prepared one
        featurizer = Featurizer(FeatureSpec.from_dict(featurizer.spec.to_dict()), cache_dir=cache_home() / "embeddings",
                                text_device_map=notes_tuning.device_map, embed_batch_size=notes_tuning.embed_batch_size)
    films = film_rows(image_encoder_data, featurizer, split, progress) if image_encoder_data else None
    seed_everything(train_config.seed)  # after the data: the model starts the same whether or not `prepared` was given
    model = build_model(build_model_config(run, featurizer, labels))
    model_config = model.config
    # the objective as this variant trains it (train/objective.py): what the checkpoint's train.loss records
    train_config = replace(train_config, loss=variant_loss(model_config.variant, train_config.loss))
    encoder_source = seed_encoders(model, encoders_from, out_dir) if encoders_from and world.is_main else None
    world.barrier()
    if notes_tuning.finetune != "none" and "notes" in model.encoders():
        finetune_notes(model, featurizer, parts["train"], parts["val"], notes_tuning, out_dir=out_dir,
                       epochs=train_config.encoder_epochs, patience=train_config.encoder_patience,
                       encoder_lr=train_config.encoder_lr, weight_decay=train_config.weight_decay,
                       seed=train_config.seed, device=device, precision=train_config.precision, progress=progress)
        # the fine-tuned model's sentence vectors (cached under its own identity) for the rest of training
        train_set = featurizer.featurize_many(parts["train"], progress)[0]
        val_set = featurizer.featurize_many(parts["val"], progress)[0]

    def write_config(folder: Path, calibration: dict[str, Any] | None = None, summary: dict[str, Any] | None = None) -> None:
        ckpt.save_config(folder, {
            "model": model_config.to_dict(),
            "features": featurizer.spec.to_dict(),
            "split": asdict(split),
            "data": {**data_provenance(data.data_dir), "n_train": len(parts["train"]), "n_val": len(parts["val"]),
                     "n_test": len(parts["test"]), "synthetic": _is_synthetic(data.data_dir),
                     **({"image_encoder_data": {**data_provenance(image_encoder_data), "n_train": len(films.train),
                                                "n_val": len(films.val)}} if films else {}),
                     **({"encoders_from": encoder_source} if encoder_source else {})},
            "train": asdict(train_config),
            "calibration": calibration,
            "summary": summary,
        })

    result = train(model, train_set, val_set, train_config, out_dir, save_extra=write_config,
                   world=world, device=device, stage1_extra={"image": films} if films else None)
    if not world.is_main:
        return result
    calibration = fit_calibration(model, val_set)
    write_config(out_dir, calibration, {"best_epoch": result.best_epoch,
                                        "best_val_macro_auprc": result.best_val_macro_auprc,
                                        "epochs_run": len(result.history),
                                        "parameters": sum(p.numel() for p in model.parameters()),
                                        "device": str(next(model.parameters()).device),
                                        "processes": world.size,
                                        "torch": torch.__version__})
    return result


def seed_encoders(model: torch.nn.Module, checkpoint_dir: str | Path, out_dir: Path) -> dict[str, Any]:
    """Stage 1 taken from another checkpoint: its encoders' weights written to out_dir/encoders/, where
    stage 1 finds them and trains nothing (encoder_pretrain.py). Why: a run on another cohort of the same
    world (the ward demo on the clean one's encoders) then costs stage 2 only, minutes instead of most of
    an hour, and every variant of a benchmark starts from the same encoders. Refused, naming the tensor,
    when an encoder of the source does not fit this model (another config or vocabulary).
    Returns what config.json records: where the encoders came from, as that checkpoint's own data."""
    from safetensors.torch import save_file

    source = Path(checkpoint_dir)
    weights = ckpt.read_weights(source)
    prefixes = {id(module): name for name, module in model.named_modules()}
    folder = Path(out_dir) / "encoders"
    folder.mkdir(parents=True, exist_ok=True)
    for modality, encoder in model.encoders().items():
        prefix = prefixes[id(encoder)] + "."
        own = encoder.state_dict()
        taken = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        for key, tensor in own.items():
            if key not in taken or tuple(taken[key].shape) != tuple(tensor.shape):
                found = "missing" if key not in taken else f"shape {tuple(taken[key].shape)}"
                raise DataError(str(source / "model.safetensors"), prefix + key,
                                f"expected a tensor of shape {tuple(tensor.shape)} for the {modality} encoder; found {found}")
        save_file({k: taken[k].contiguous() for k in own}, str(folder / f"{modality}.safetensors"))
    config = ckpt.read_config(source)
    return {"checkpoint": data_provenance(source)["path"], "data": config.get("data", {})}


def _is_synthetic(data_dir: Path) -> bool:
    """A cohort written by `synth` says so in its cohort.json (the dashboard's demo-model banner reads this)."""
    cohort_file = Path(data_dir) / "cohort.json"
    try:
        return "generator_version" in json.loads(cohort_file.read_text()) if cohort_file.is_file() else False
    except (OSError, json.JSONDecodeError):
        return False
