"""The disentanglement lab: its pure maths (CKA, leakage probe, shares, PCA) and the page under AppTest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from medfuse_core.explain.disentanglement import (contribution_shares, cka_matrix, leakage_probe, linear_cka, modality_rows,
                                 pca_2d)

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


# ------------------------------------------------------------------------------------ CKA


def test_cka_of_identical_and_transformed_representations_is_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))  # rotation, isotropic scale and shift: invariant
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-9)


def test_cka_of_independent_random_representations_is_near_zero() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))
    assert 0.0 <= linear_cka(x, y) < 0.02
    # partially shared: in between
    z = x + rng.normal(size=x.shape)
    assert 0.2 < linear_cka(x, z) < 0.9


def test_cka_edge_cases_and_matrix() -> None:
    assert math.isnan(linear_cka(np.ones((5, 3)), np.random.default_rng(2).normal(size=(5, 3))))  # constant
    with pytest.raises(ValueError):
        linear_cka(np.zeros((4, 2)), np.zeros((5, 2)))
    rng = np.random.default_rng(3)
    shared = rng.normal(size=(50, 4, 6))
    shared[:, 1] = shared[:, 0] * 2.0  # modality 1 a copy of 0
    present = np.ones((50, 4), dtype=bool)
    present[:, 3] = False  # modality 3 never present
    m = cka_matrix(shared, present)
    assert m.shape == (4, 4)
    assert np.allclose(np.diag(m)[:3], 1.0) and m[0, 1] == pytest.approx(1.0)
    assert np.isnan(m[3]).all() and np.isnan(m[:, 3]).all()
    assert np.allclose(m[:3, :3], m[:3, :3].T)


# ------------------------------------------------------------------------------ leakage probe


def _modality_data(shift: float, n: int = 60, d: int = 8, seed: int = 0):
    """n patients x 4 modalities; each modality's vectors offset by `shift` along its own axis."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, d))
    for m in range(4):
        x[:, m, m] += shift
    present = np.ones((n, 4), dtype=bool)
    present[rng.random((n, 4)) < 0.2] = False
    return modality_rows(x, present)


def test_probe_decodes_a_modality_offset_and_not_noise() -> None:
    x, y, groups = _modality_data(shift=4.0)
    leaky = leakage_probe(x, y, groups, folds=5)
    assert leaky.folds == 5 and leaky.n == len(y)
    assert leaky.accuracy > 0.95 and leaky.chance < 0.35
    x, y, groups = _modality_data(shift=0.0)
    clean = leakage_probe(x, y, groups, folds=5)
    assert abs(clean.accuracy - 0.25) < 0.12  # about 1 in 4 (chance of the balanced classes)
    assert clean.above_chance < 0.1


def test_probe_degenerate_inputs() -> None:
    one_class = leakage_probe(np.zeros((20, 3)), np.zeros(20, dtype=int))
    assert math.isnan(one_class.accuracy) and one_class.chance == 1.0
    tiny = leakage_probe(np.zeros((4, 3)), np.array([0, 1, 0, 1]))
    assert math.isnan(tiny.accuracy)


# ------------------------------------------------------------------------------ shares, PCA


def test_contribution_shares_rows_sum_to_one_and_skip_all_zero() -> None:
    c = np.zeros((3, 2, 5))
    c[0, 0] = [1.0, -1.0, 0.0, 0.0, 2.0]  # shares .25 .25 0 0 .5
    c[1, 0] = [0.0, 0.0, 0.0, 0.0, -3.0]  # all shared
    # patient 2, label 0: all zero -> left out; label 1: all zero for everyone -> zeros
    shares = contribution_shares(c)
    assert np.allclose(shares[0], [0.125, 0.125, 0.0, 0.0, 0.75])
    assert np.allclose(shares[1], 0.0)


def test_pca_2d_finds_the_main_axis() -> None:
    rng = np.random.default_rng(4)
    x = np.zeros((100, 5))
    x[:, 2] = rng.normal(size=100) * 10
    x[:, 4] = rng.normal(size=100)
    coords, ratio = pca_2d(x)
    assert coords.shape == (100, 2)
    assert ratio[0] > 0.9 and ratio[0] >= ratio[1]
    assert abs(np.corrcoef(coords[:, 0], x[:, 2])[0, 1]) > 0.999


# ------------------------------------------------------------------------------ the page


@pytest.fixture()
def with_model(demo_checkpoint: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    return demo_checkpoint


def _lab() -> AppTest:
    return AppTest.from_file(MAIN, default_timeout=300).switch_page("views/lab.py").run()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_lab_page_shows_every_diagnostic(with_model: Path) -> None:
    at = _lab()
    _ok(at)
    assert at.title[0].value == "Disentanglement lab"
    headings = [m.value for m in at.markdown]
    for section in ("mean share of |contribution|", "Mutual information", "CKA of shared projections",
                    "Leakage probe", "2-D projection (PCA)"):
        assert any(section in h for h in headings), section
    mi = next(d.value for d in at.dataframe if "nats" in d.value.columns)
    assert list(mi["estimate"]) == ["InfoNCE (lower bound)"] + ["vCLUB (upper bound)"] * 4
    assert np.isfinite(mi["nats"].iloc[0]) and mi["nats"].iloc[0] <= math.log(40) + 1e-6
    probe = next(d.value for d in at.dataframe if "accuracy" in d.value.columns)
    assert len(probe) == 2 and (probe["chance"] > 0).all() and probe["accuracy"].between(0, 1).all()
    assert any("linear probe decodes the modality" in c.value for c in at.caption)
    at.radio(key="a_colour").set_value("label").run()
    _ok(at)
    assert at.selectbox(key="a_label").value == "Congestive heart failure; nonhypertensive"  # the model's first label
    at.selectbox(key="a_label").select_index(1).run()
    _ok(at)


def test_lab_page_second_checkpoint_side_by_side(with_model: Path, tmp_path: Path) -> None:
    at = _lab()
    at.text_input(key="lab_checkpoint_b").input(str(with_model)).run()
    _ok(at)
    assert [m.value for m in at.markdown if m.value.startswith("####")] == [
        f"#### A: `{with_model.name}`", f"#### B: `{with_model.name}`"]
    assert at.radio(key="b_colour").value == "modality"  # B has its own widgets
    at.text_input(key="lab_checkpoint_b").input(str(tmp_path / "nope")).run()
    _ok(at)
    assert "is not a checkpoint" in at.error[0].value
    assert len([m for m in at.markdown if m.value.startswith("####")]) == 1


def test_lab_page_without_a_model_says_why(monkeypatch) -> None:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", "")
    at = _lab()
    _ok(at)
    assert "no model checkpoint is configured" in " ".join(i.value for i in at.info)
