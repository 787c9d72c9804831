"""Two-stage training: encoders pretrained alone, then fusion on their frozen (cached) outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medfuse_core.features.batch import collate
from medfuse_core.models.baselines import build_model
from medfuse_core.models.model import MedFuseLens
from medfuse_core.train.encoder_pretrain import _augment_images
from medfuse_core.train.loop import EncodedSet, TrainConfig, predict_logits, train
from tests.model_fixtures import tiny_config


def _encoder_state(model) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m, e in model.encoders().items() for k, v in e.state_dict().items()}


def test_stage_one_trains_each_encoder_and_stage_two_leaves_them_frozen(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(0)
    model = MedFuseLens(tiny_config(featurizer))
    before = _encoder_state(model)
    config = TrainConfig(epochs=3, batch_size=8, patience=100, progress=False, seed=0, encoder_epochs=2,
                         encoder_patience=100, freeze_encoders=True)
    result = train(model, features[:24], features[24:], config, tmp_path)
    after_stage_one = {k: v for k, v in _encoder_state(model).items()}
    changed = {k.split(".")[0] for k, v in after_stage_one.items() if not torch.equal(v, before[k])}
    assert changed == {"labs", "notes", "vitals", "image"}
    assert {log.modality for log in result.encoder_history} == {"labs", "notes", "vitals", "image"}
    for m in ("labs", "notes", "vitals", "image"):
        assert (tmp_path / "encoders" / f"{m}.safetensors").is_file()
    # stage 2 did not touch the encoders: the saved stage-1 weights are the final ones
    from safetensors.torch import load_file
    for m, encoder in model.encoders().items():
        saved = load_file(str(tmp_path / "encoders" / f"{m}.safetensors"))
        for k, v in encoder.state_dict().items():
            assert torch.equal(v.cpu(), saved[k]), (m, k)
        assert all(not p.requires_grad for p in encoder.parameters())
    assert len(result.history) == 3


def test_cached_features_give_the_models_own_logits(small_cohort) -> None:
    featurizer, features, _, _ = small_cohort
    torch.manual_seed(3)
    for variant in ("medfuse_lens", "late_fusion", "single:notes"):
        config = tiny_config(featurizer)
        config.variant = variant
        model = build_model(config).eval()
        encoded = EncodedSet.build(model, features, 8, torch.device("cpu"))
        with torch.no_grad():
            cached = model.forward_features(encoded.features, encoded.present).logits.numpy()
        direct = predict_logits(model, features)
        np.testing.assert_allclose(cached, direct, rtol=1e-4, atol=1e-5)


def test_rerun_reuses_pretrained_encoders(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    config = TrainConfig(epochs=1, batch_size=8, patience=100, progress=False, seed=0, encoder_epochs=1,
                         freeze_encoders=True)
    torch.manual_seed(0)
    first = MedFuseLens(tiny_config(featurizer))
    train(first, features[:24], features[24:], config, tmp_path)
    torch.manual_seed(99)  # a different initialisation: the encoders must still come from the first run
    second = MedFuseLens(tiny_config(featurizer))
    result = train(second, features[:24], features[24:], TrainConfig(**{**config.__dict__, "epochs": 2}), tmp_path)
    for m in ("labs", "notes", "vitals", "image"):
        for (k, a), b in zip(first.encoders()[m].state_dict().items(), second.encoders()[m].state_dict().values()):
            assert torch.equal(a, b), (m, k)
    assert len(result.history) == 2  # resumed after epoch 1


def test_image_shift_moves_pixels_and_keeps_the_rest(small_cohort) -> None:
    _, features, _, _ = small_cohort
    batch = collate(features[:4])
    shifted = _augment_images(batch, torch.Generator().manual_seed(0), 6)
    assert shifted.image.shape == batch.image.shape
    assert torch.equal(shifted.lab_values, batch.lab_values)
    with_image = batch.present[:, 3]
    assert not torch.equal(shifted.image[with_image], batch.image[with_image])
    assert torch.equal(_augment_images(batch, torch.Generator(), 0).image, batch.image)


def test_stage_two_from_saved_encoders_matches_an_uninterrupted_run(small_cohort, tmp_path: Path) -> None:
    """The documented reproduction path: stage 2 started from a copied encoders/ folder gives the
    same weights as one run doing both stages."""
    import shutil

    featurizer, features, _, _ = small_cohort
    config = TrainConfig(epochs=2, batch_size=8, patience=100, progress=False, seed=4, encoder_epochs=1,
                         freeze_encoders=True)
    torch.manual_seed(4)
    whole = MedFuseLens(tiny_config(featurizer))
    train(whole, features[:24], features[24:], config, tmp_path / "whole")
    shutil.copytree(tmp_path / "whole" / "encoders", tmp_path / "split" / "encoders")
    torch.manual_seed(4)
    split = MedFuseLens(tiny_config(featurizer))
    train(split, features[:24], features[24:], config, tmp_path / "split")
    for (name, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), name


def test_fusion_seed_changes_stage_two_only(small_cohort, tmp_path: Path) -> None:
    """fusion_seed: another stage 2 on the same stage-1 encoders (what the seed sweep and the demo's
    selected checkpoint use); fusion_seed == seed is the plain run."""
    from dataclasses import replace

    featurizer, features, _, _ = small_cohort
    base = TrainConfig(epochs=2, batch_size=8, patience=100, progress=False, seed=4, encoder_epochs=1,
                       freeze_encoders=True)
    models = {}
    for name, config in (("plain", base), ("same", replace(base, fusion_seed=4)), ("other", replace(base, fusion_seed=9))):
        torch.manual_seed(4)
        models[name] = MedFuseLens(tiny_config(featurizer))
        train(models[name], features[:24], features[24:], config, tmp_path / name)
    plain, same, other = (models[k].state_dict() for k in ("plain", "same", "other"))
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    encoders = {f"{m}_encoder" for m in ("lab", "note", "vitals", "image")}
    fusion_keys = [k for k in plain if k.split(".")[0] not in encoders]
    assert all(torch.equal(plain[k], other[k]) for k in plain if k.split(".")[0] in encoders)  # stage 1 untouched
    assert any(not torch.equal(plain[k], other[k]) for k in fusion_keys)  # stage 2 differs


def test_selection_start_never_keeps_an_earlier_epoch(small_cohort, tmp_path: Path) -> None:
    featurizer, features, _, _ = small_cohort
    runs = {}
    for start in (0, 3):
        torch.manual_seed(0)
        model = MedFuseLens(tiny_config(featurizer))
        config = TrainConfig(epochs=4, batch_size=8, patience=100, progress=False, seed=0, selection_start=start)
        runs[start] = train(model, features[:24], features[24:], config, tmp_path / str(start))
    scores = [log.val_macro_auprc for log in runs[0].history]
    assert runs[0].best_epoch == int(np.argmax(scores))  # selection from epoch 0: the best of all
    assert [log.val_macro_auprc for log in runs[3].history] == scores  # the same training, only the pick differs
    assert runs[3].best_epoch >= 3 and runs[3].best_val_macro_auprc == max(scores[3:])


def test_extra_rows_join_stage_one_without_counting_a_patient_twice(small_cohort) -> None:
    from dataclasses import replace

    from medfuse_core.train.encoder_pretrain import ExtraRows

    _, features, _, _ = small_cohort
    image = 3
    main_train, main_val = features[:16], features[16:20]
    renamed = [replace(f, patient_id=f"other-{f.patient_id}") for f in features[20:]]
    extra = ExtraRows(train=features[:4] + renamed[:8], val=features[16:18] + renamed[8:])
    rows_train = [f for f in main_train if f.present[image]]
    rows_val = [f for f in main_val if f.present[image]]
    joined_train, joined_val = extra.joined(rows_train, rows_val, image)
    assert joined_train[:len(rows_train)] == rows_train and joined_val[:len(rows_val)] == rows_val
    assert [f.patient_id for f in joined_train[len(rows_train):]] == [f.patient_id for f in renamed[:8] if f.present[image]]
    assert [f.patient_id for f in joined_val[len(rows_val):]] == [f.patient_id for f in renamed[8:] if f.present[image]]
    ids = [f.patient_id for f in joined_train + joined_val]
    assert len(ids) == len(set(ids))


def test_image_encoder_data_adds_films_to_the_image_encoder_only(tiny_cohort, tmp_path: Path) -> None:
    """`train --image-encoder-data`: another cohort's train/val films join stage 1 of the image
    encoder; the other encoders and stage 2 see --data alone, and the run folder records it."""
    import json

    from safetensors.torch import load_file

    from medfuse_core.sources.synth import generate_cohort
    from medfuse_core.train.run import run_training
    from tests.conftest import TINY_RUN_CONFIG

    films = tmp_path / "films"
    generate_cohort(16, seed=12, out_dir=films, image_size=64)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(TINY_RUN_CONFIG))
    overrides = {"encoder_epochs": 1, "freeze_encoders": True}
    run_training(tiny_cohort, tmp_path / "plain", config, overrides)
    run_training(tiny_cohort, tmp_path / "more", config, overrides, image_encoder_data=films)
    recorded = json.loads((tmp_path / "more" / "config.json").read_text())["data"]["image_encoder_data"]
    # recorded without the machine's absolute path: the folder as a portable path and the command that made it
    from medfuse_core.provenance import portable_path

    assert recorded["path"] == portable_path(films) and recorded["n_train"] > 0
    assert recorded["made_by"] == "synth --n 16 --seed 12" and not recorded["path"].startswith("/")
    assert "image_encoder_data" not in json.loads((tmp_path / "plain" / "config.json").read_text())["data"]
    for modality, same in (("labs", True), ("notes", True), ("vitals", True), ("image", False)):
        a = load_file(str(tmp_path / "plain" / "encoders" / f"{modality}.safetensors"))
        b = load_file(str(tmp_path / "more" / "encoders" / f"{modality}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a) == same, modality


def test_image_encoder_data_without_stage_one_is_refused_before_reading(tiny_cohort, tmp_path: Path) -> None:
    import json

    import pytest

    from medfuse_core.problems import DataError
    from medfuse_core.train.run import run_training
    from tests.conftest import TINY_RUN_CONFIG

    config = tmp_path / "run.json"
    config.write_text(json.dumps(TINY_RUN_CONFIG))  # encoder_epochs 0: no stage 1 to give the films to
    with pytest.raises(DataError) as caught:
        run_training(tiny_cohort, tmp_path / "run", config, image_encoder_data=tmp_path / "films")
    assert "encoder_epochs" in str(caught.value) and str(tmp_path / "films") in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_film_rows_keep_only_the_films_and_name_a_cohort_without_any(tiny_cohort, tmp_path: Path) -> None:
    import shutil

    import pytest

    from medfuse_core.problems import DataError
    from medfuse_core.train.run import SplitConfig, film_rows, prepare_data, RunConfig
    from tests.conftest import TINY_RUN_CONFIG

    run = RunConfig(**TINY_RUN_CONFIG)
    split = SplitConfig(**run.split)
    featurizer = prepare_data(tiny_cohort, run, split, progress=False).featurizer
    rows = film_rows(tiny_cohort, featurizer, split, progress=False)
    assert rows.train and all(f.present.tolist() == [False, False, False, True] for f in rows.train + rows.val)
    assert all(not np.isnan(f.labels).all() for f in rows.train)
    no_films = tmp_path / "no_films"
    shutil.copytree(tiny_cohort, no_films)
    for folder in no_films.glob("*/images"):
        shutil.rmtree(folder)
    with pytest.raises(DataError) as caught:
        film_rows(no_films, featurizer, split, progress=False)
    assert str(no_films) in str(caught.value) and "images" in str(caught.value)


def test_encoders_from_another_checkpoint_are_stage_one_and_recorded(tiny_cohort, tmp_path: Path) -> None:
    """`train --encoders-from RUN`: the new run's encoders are RUN's, tensor for tensor, stage 1 trains
    nothing, stage 2 trains its own head, and config.json says where the encoders came from. An encoder
    of another shape is refused naming the tensor, before any training."""
    import copy
    import json

    import pytest
    from safetensors.torch import load_file

    from medfuse_core.problems import DataError
    from medfuse_core.train.run import run_training
    from tests.conftest import TINY_RUN_CONFIG

    config = tmp_path / "run.json"
    config.write_text(json.dumps(TINY_RUN_CONFIG))
    overrides = {"encoder_epochs": 1, "freeze_encoders": True}
    run_training(tiny_cohort, tmp_path / "source", config, overrides)
    run_training(tiny_cohort, tmp_path / "taken", config, {**overrides, "seed": 5}, encoders_from=tmp_path / "source")
    source, taken = load_file(str(tmp_path / "source" / "model.safetensors")), load_file(str(tmp_path / "taken" / "model.safetensors"))
    encoder_keys = [k for k in source if k.split(".")[0] in ("lab_encoder", "note_encoder", "vitals_encoder", "image_encoder")]
    assert encoder_keys and all(torch.equal(source[k], taken[k]) for k in encoder_keys)
    head_keys = [k for k in source if k not in encoder_keys and k in taken]
    assert any(not torch.equal(source[k], taken[k]) for k in head_keys)  # stage 2 trained again (another seed)
    recorded = json.loads((tmp_path / "taken" / "config.json").read_text())["data"]["encoders_from"]
    assert not recorded["checkpoint"].startswith("/") and recorded["checkpoint"].endswith("source")
    assert "encoders_from" not in json.loads((tmp_path / "source" / "config.json").read_text())["data"]

    other = copy.deepcopy(TINY_RUN_CONFIG)
    other["model"]["labs"]["d_model"] = 24
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match=r"lab_encoder\..*expected a tensor of shape .* for the labs encoder"):
        run_training(tiny_cohort, tmp_path / "mismatch", tmp_path / "other.json", overrides,
                     encoders_from=tmp_path / "source")
