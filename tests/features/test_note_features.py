"""Note sentences (exact offsets on clinical text) and the on-disk sentence-embedding cache."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from medfuse_core.features.embedding_cache import EmbeddingCache  # noqa: E402
from medfuse_core.features.notes import NoteSentence, note_sentences, split_sentences  # noqa: E402
from medfuse_core.record import Note  # noqa: E402

TRICKY = (
    "Admission History and Physical\r\n"
    "75 yo F\n\n"
    "CC: SOB\n"
    "HPI: Pt. is a 75 yo woman seen by Dr. Smith. Temp 38.5, HR 110 overnight. Started metformin 500 mg "
    "b.i.d. Continue lasix. Discussed with pt. Family at bedside.\n"
    "PMH:\n"
    "- CHF (EF 30%)\n"
    "\u2022 Caf\u00e9-au-lait spots; pt. c/o pain \u2014 stable\u2028"
    "  2) COPD on 2L home O2\n"
    "Hx: DM2, HTN Plan: continue home meds? Yes! e.g. Lasix 40 mg IV.\n"
    "-----\n"
    "Exam: Gen: NAD. HEENT: MMM\u00a0 Neck: supple\n"
    "Na 135; K 4.2 \u2192 repleted. \U0001F600 Pt smiling.\n"
)
EXPECTED = [
    "Admission History and Physical",
    "75 yo F",
    "CC: SOB",
    "HPI: Pt. is a 75 yo woman seen by Dr. Smith.",
    "Temp 38.5, HR 110 overnight.",
    "Started metformin 500 mg b.i.d.",
    "Continue lasix.",
    "Discussed with pt.",
    "Family at bedside.",
    "CHF (EF 30%)",
    "Caf\u00e9-au-lait spots; pt. c/o pain \u2014 stable",
    "COPD on 2L home O2",
    "Hx: DM2, HTN",
    "Plan: continue home meds?",
    "Yes! e.g. Lasix 40 mg IV.",
    "Exam: Gen: NAD.",
    "HEENT: MMM",
    "Neck: supple",
    "Na 135; K 4.2 \u2192 repleted.",
    "\U0001F600 Pt smiling.",
]


def test_split_sentences_tricky_clinical_text_exact_offsets() -> None:
    sentences = split_sentences(TRICKY)
    assert [s.text for s in sentences] == EXPECTED
    for s in sentences:
        assert TRICKY[s.start : s.end] == s.text
    assert all(a.end <= b.start for a, b in zip(sentences, sentences[1:]))


def test_headers_kept_on_request_and_empty_text() -> None:
    assert "PMH:" in [s.text for s in split_sentences(TRICKY, keep_headers=True)]
    assert split_sentences("") == [] and split_sentences(" \n\n ---- \n") == []


def test_long_sentence_chunked_at_word_boundaries() -> None:
    text = "Start " + " ".join(f"w{i}" for i in range(130)) + " end."
    chunks = split_sentences(text, max_words=50)
    assert len(chunks) == 3
    assert all(len(c.text.split()) <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks) == text  # nothing lost, cut only at single spaces
    for c in chunks:
        assert text[c.start : c.end] == c.text


def test_planted_spans_of_synthetic_notes_lie_inside_one_sentence() -> None:
    """Attribution is scored against planted spans: a sentence boundary must never cut one."""
    from medfuse_core.sources.synth.cohort import _streams
    from medfuse_core.sources.synth.notes import make_notes
    from medfuse_core.sources.synth.plan import make_plan

    checked = 0
    for index in range(40):
        rng = _streams(5, index)
        notes, spans = make_notes(rng["notes"], make_plan(rng["plan"], index))
        sentences = [split_sentences(n.text) for n in notes]
        for n, sents in zip(notes, sentences):
            assert all(n.text[s.start : s.end] == s.text for s in sents)
        for span in spans:
            inside = [s for s in sentences[span.note] if s.start <= span.start and span.end <= s.end]
            assert len(inside) == 1, (span, [s.text for s in sentences[span.note]])
            checked += 1
    assert checked > 50


def test_note_sentences_chronological_and_most_recent_kept() -> None:
    t0 = pd.Timestamp("2131-05-07 08:00")
    notes = [
        Note(t0 + pd.Timedelta(hours=20), "Nursing", "Late one. Late two."),
        Note(t0, "Physician", "Early one. Early two. Early three."),
        Note(None, "Other", "Undated."),
    ]
    every = note_sentences(notes)
    assert [s.text for s in every] == ["Undated.", "Early one.", "Early two.", "Early three.", "Late one.", "Late two."]
    assert [s.note_index for s in every] == [2, 1, 1, 1, 0, 0]
    assert every[1].time == t0 and every[0].time is None
    for s in every:
        assert notes[s.note_index].text[s.start : s.end] == s.text
    kept = note_sentences(notes, max_sentences=3)
    assert kept == every[-3:]
    assert isinstance(kept[0], NoteSentence) and [s.text for s in kept] == ["Early three.", "Late one.", "Late two."]
    assert note_sentences(notes, max_sentences=0) == [] and note_sentences([], 5) == []


# ------------------------------------------------------------------------------------ embedding cache


class CountingBackbone:
    """A thin wrapper that counts model calls and the sentences sent to the model."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.calls = 0
        self.sentences = 0

    @property
    def identity(self) -> str:
        return self.backbone.identity

    @property
    def embedding_dim(self) -> int:
        return self.backbone.embedding_dim

    def embed(self, texts, batch_size=32):
        self.calls += 1
        self.sentences += len(texts)
        return self.backbone.embed(texts, batch_size=batch_size)


@pytest.fixture(scope="module")
def tiny_llamas(tmp_path_factory):
    from medfuse_core.features.text_backbone import TextBackbone
    from tests.features.test_text_backbone import save_tiny_llama

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"llama{seed}")
        save_tiny_llama(folder, seed=seed)
        out.append(TextBackbone.from_pretrained(folder, pooling="last"))
    yield out
    torch.set_num_threads(before)


TEXTS = ["the patient has heart failure", "fever", "copd on home oxygen", "fever", "denies pain"]


def test_cache_hit_identical_and_no_model_call(tmp_path, tiny_llamas) -> None:
    model = CountingBackbone(tiny_llamas[0])
    cache = EmbeddingCache(tmp_path / "cache")
    first = cache.get_or_compute(TEXTS, model)
    assert first.shape == (5, 32) and first.dtype == np.float32
    assert model.calls == 1 and model.sentences == 4  # the duplicate "fever" embedded once
    np.testing.assert_allclose(first, tiny_llamas[0].embed(TEXTS).numpy(), atol=1e-6)
    np.testing.assert_array_equal(first[1], first[3])

    again = cache.get_or_compute(TEXTS, model)  # memory hit
    np.testing.assert_array_equal(again, first)
    assert model.calls == 1

    fresh = EmbeddingCache(tmp_path / "cache")  # another process / app session: disk hit
    from_disk = fresh.get_or_compute(list(reversed(TEXTS)), model)
    np.testing.assert_array_equal(from_disk, first[::-1])
    assert model.calls == 1 and fresh.misses == 0 and fresh.hits == 4

    mixed = fresh.get_or_compute(["fever", "new sentence tonight"], model)  # only the new one computed
    assert model.calls == 2 and model.sentences == 5
    np.testing.assert_array_equal(mixed[0], first[1])
    shards = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(shards) == 2 and not list((tmp_path / "cache").rglob(".tmp-*"))
    assert not list((tmp_path / "cache").rglob("*.pkl"))


def test_cache_sees_shards_written_by_another_instance(tmp_path, tiny_llamas) -> None:
    model = CountingBackbone(tiny_llamas[0])
    reader = EmbeddingCache(tmp_path)
    reader.get_or_compute(["fever"], model)  # reader has indexed its folder already
    writer = EmbeddingCache(tmp_path)
    written = writer.get_or_compute(["denies pain"], model)
    calls = model.calls
    np.testing.assert_array_equal(reader.get_or_compute(["denies pain"], model), written)
    assert model.calls == calls


def test_different_model_identity_gives_different_keys(tmp_path, tiny_llamas) -> None:
    from medfuse_core.features.text_backbone import TextBackbone

    a, b = tiny_llamas
    assert a.identity != b.identity
    cache = EmbeddingCache(tmp_path)
    ea = cache.get_or_compute(TEXTS, CountingBackbone(a))
    counted_b = CountingBackbone(b)
    eb = cache.get_or_compute(TEXTS, counted_b)
    assert counted_b.calls == 1  # nothing reused from model a
    assert not np.allclose(ea, eb)
    mean_pooled = TextBackbone.from_pretrained(a.folder, pooling="mean")
    assert mean_pooled.identity != a.identity
    counted_mean = CountingBackbone(mean_pooled)
    em = cache.get_or_compute(TEXTS, counted_mean)
    assert counted_mean.calls == 1 and not np.allclose(em, ea)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3  # one folder per model identity


def test_cache_empty_input(tmp_path, tiny_llamas) -> None:
    model = CountingBackbone(tiny_llamas[0])
    out = EmbeddingCache(tmp_path).get_or_compute([], model)
    assert out.shape == (0, 32) and model.calls == 0
