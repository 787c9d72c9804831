"""Explanations from several threads at once (the dashboard serves every session from one process and
one model): Captum's layer methods hook modules of that shared model, so the parallel results must
equal the sequential ones exactly, for the layer maps themselves and for plain forward passes and
text embeddings running beside them; the eval-mode switch must not leak between threads, nor the
torch thread setting of medfuse_core/runtime/threads.py interactive_threads between sessions."""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable

import numpy as np
import pytest
import torch

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.explain.evidence import EvidenceExplainer
from medfuse_core.explain.groups import group_contributions
from medfuse_core.features.batch import collate
from medfuse_core.models.model import MedFuseLens
from tests.model_fixtures import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

THREADS, ROUNDS = 4, 12


@pytest.fixture(scope="module")
def tiny(small_cohort):
    featurizer, features, records, evidence = small_cohort
    torch.manual_seed(0)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    full = [i for i, f in enumerate(features) if f.present.all() and len(evidence[i].sentences)]
    assert len(full) >= THREADS
    return featurizer, features, records, evidence, model, full[:THREADS]


def _layer_maps(tiny, i: int) -> dict[str, np.ndarray]:
    """The three Captum layer methods (LayerIG on the lab embeddings and on the text model's embedding
    layer, LayerGradCam) for patient i, built from scratch (the explainer's own forward passes too)."""
    featurizer, features, records, evidence, model, _ = tiny
    ex = EvidenceExplainer(model, features[i], evidence[i], records[i], featurizer.backbone, featurizer.vocabulary)
    labs, _ = ex.labs(1, n_steps=8)
    tokens, _ = ex.note_tokens(1, 0, n_steps=4)
    return {
        "init_logits": ex.logits.numpy(),
        "labs": np.array([e.attribution for e in labs]),
        "tokens": np.array([t.attribution for t in tokens]),
        "gradcam": ex.image(1, method="gradcam").model_map,
    }


def _run_together(jobs: list[Callable[[], Any]], rounds: int = ROUNDS) -> list[list[Any]]:
    """Every job in its own thread, `rounds` times, each round started together (a barrier), so the
    calls overlap; re-raises the first exception of any thread."""
    barrier = threading.Barrier(len(jobs))
    results: list[list[Any]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def worker(j: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=120)
                results[j].append(jobs[j]())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return results


def _fresh_thread_setting() -> int:
    """torch.get_num_threads() in a new thread: the process-wide setting new threads start with."""
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join(timeout=60)
    return out[0]


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].shape == want[key].shape, (where, key)
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=f"{where}: {key}")


def test_layer_attributions_of_different_patients_in_parallel_equal_the_sequential_ones(tiny) -> None:
    patients = tiny[5]
    sequential = {i: _layer_maps(tiny, i) for i in patients}
    results = _run_together([lambda i=i: _layer_maps(tiny, i) for i in patients])
    for i, rounds in zip(patients, results):
        assert len(rounds) == ROUNDS
        for r, got in enumerate(rounds):
            _assert_same(got, sequential[i], f"patient {i}, round {r}")


def test_forward_passes_and_text_embeddings_beside_layer_attributions_are_unaffected(tiny) -> None:
    """A hook on a shared module fires for every thread's forward pass through it, not only for the
    explanation that attached it: predictions and featurization must not see another session's hooks."""
    featurizer, features, _, evidence, model, patients = tiny
    batch = collate(list(features))
    sentences = [s.text for i in patients for s in evidence[i].sentences][:24]

    def predict() -> dict[str, np.ndarray]:
        with torch.no_grad():
            logits = model(batch).logits.numpy()
        return {"logits": logits, "groups": group_contributions(model, batch).values.numpy()}

    def embed() -> dict[str, np.ndarray]:
        return {"vectors": featurizer.backbone.embed(sentences).numpy()}

    want_predict, want_embed = predict(), embed()
    jobs = [predict, embed] + [lambda i=i: _layer_maps(tiny, i) for i in patients[:2]]
    results = _run_together(jobs)
    for r in range(ROUNDS):
        _assert_same(results[0][r], want_predict, f"predictions, round {r}")
        _assert_same(results[1][r], want_embed, f"text embeddings, round {r}")


def test_eval_mode_keeps_a_training_model_in_eval_until_the_last_overlapping_block_ends(tiny) -> None:
    """Thread A enters, B enters, A leaves while B is still inside: the model must stay in eval mode for
    B (a plain save-and-restore would switch dropout back on under B), and train mode comes back at the end."""
    model = copy.deepcopy(tiny[4]).train()
    inside, a_left, b_checked = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def a() -> None:
        with eval_mode(model):
            inside.set()
            b_checked.wait(timeout=60)  # B is inside too
        a_left.set()

    def b() -> None:
        inside.wait(timeout=60)
        with eval_mode(model):
            seen["b, both inside"] = model.training
            b_checked.set()
            a_left.wait(timeout=60)
            seen["b, after a left"] = model.training

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert seen == {"b, both inside": False, "b, after a left": False}
    assert model.training and all(m.training for m in model.modules())


def test_parallel_explanations_of_a_model_in_training_mode_are_of_the_eval_model(tiny) -> None:
    featurizer, features, records, evidence, model, patients = tiny
    trained = copy.deepcopy(model).train()
    twin = (featurizer, features, records, evidence, trained, patients)
    batch = collate([features[i] for i in patients])
    sequential = {i: _layer_maps(tiny, i) for i in patients[:3]}  # the eval-mode model's maps
    groups = group_contributions(model, batch).values.numpy()
    jobs = [lambda i=i: _layer_maps(twin, i) for i in patients[:3]]
    jobs.append(lambda: {"groups": group_contributions(trained, batch).values.numpy()})
    results = _run_together(jobs, rounds=6)
    for j, i in enumerate(patients[:3]):
        for r, got in enumerate(results[j]):
            _assert_same(got, sequential[i], f"patient {i}, round {r}")
    for r, got in enumerate(results[3]):
        _assert_same(got, {"groups": groups}, f"groups, round {r}")
    assert trained.training


def test_interactive_threads_restores_the_setting_only_when_the_last_overlapping_session_leaves(monkeypatch) -> None:
    """torch.set_num_threads is process-wide (the value new threads start with; PyTorch also keeps a
    copy per thread). Session A enters, B enters, A leaves: B and any thread started meanwhile must
    still get 1; when B leaves too, the value from before comes back."""
    from medfuse_core.runtime.threads import THREADS_ENV, interactive_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    a_inside, b_inside, a_left = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def a() -> None:
        torch.get_num_threads()  # this thread has run torch before the blocks, as a session's thread has
        with interactive_threads():
            a_inside.set()
            b_inside.wait(timeout=60)
        a_left.set()

    def b() -> None:
        torch.get_num_threads()
        a_inside.wait(timeout=60)
        with interactive_threads():
            b_inside.set()
            a_left.wait(timeout=60)
            seen["b, after a left"] = torch.get_num_threads()
            seen["new thread, b inside"] = _fresh_thread_setting()

    try:
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        seen["new thread, after both"] = _fresh_thread_setting()
    finally:
        torch.set_num_threads(before)
    assert seen == {"b, after a left": 1, "new thread, b inside": 1, "new thread, after both": 3}


def test_interactive_threads_saves_the_process_setting_not_a_threads_leftover(monkeypatch) -> None:
    """A thread that left a block while another was inside keeps the block's value as its own copy; when
    it is later the first one into a block, the process setting must still change for the block, and the
    value to restore is the process's, not that copy."""
    from concurrent.futures import ThreadPoolExecutor

    from medfuse_core.runtime.threads import THREADS_ENV, interactive_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    a, b = ThreadPoolExecutor(1), ThreadPoolExecutor(1)  # two long-lived threads
    blocks: dict[str, Any] = {}

    def enter(name: str) -> None:
        blocks[name] = interactive_threads()
        blocks[name].__enter__()

    def leave(name: str) -> None:
        blocks.pop(name).__exit__(None, None, None)

    def run(*steps: tuple[ThreadPoolExecutor, Callable[[str], None], str]) -> int:
        """The steps one after the other, each in its thread; then the process setting."""
        for thread, step, name in steps:
            thread.submit(step, name).result(timeout=60)
        return _fresh_thread_setting()

    try:
        between = run((a, enter, "a1"), (b, enter, "b1"), (a, leave, "a1"), (b, leave, "b1"))  # a keeps 1
        inside = run((a, enter, "a2"))  # a first in: its own copy is 1 already, the process's is not
        after = run((b, enter, "b2"), (b, leave, "b2"), (a, leave, "a2"))  # a last out
    finally:
        a.shutdown()
        b.shutdown()
        torch.set_num_threads(before)
    assert (between, inside, after) == (3, 1, 3)


def test_interactive_threads_under_many_overlapping_sessions_ends_where_it_started(monkeypatch) -> None:
    from medfuse_core.runtime.threads import THREADS_ENV, interactive_threads

    monkeypatch.setenv(THREADS_ENV, "2")
    before = torch.get_num_threads()
    torch.set_num_threads(5)
    inside: list[tuple[int, int]] = []

    def session() -> None:
        with interactive_threads():
            inside.append((torch.get_num_threads(), _fresh_thread_setting()))

    try:
        _run_together([session] * 6, rounds=20)
        after = _fresh_thread_setting()
    finally:
        torch.set_num_threads(before)
    assert inside == [(2, 2)] * 120 and after == 5
