"""Note evidence at two levels: Integrated Gradients on the cached sentence embeddings (one value per
sentence, exact and cheap), and Integrated Gradients on the text model's word-piece embeddings for
the top sentences only (word pieces with character offsets)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from medfuse_core.explain.evidence.results import SentenceEvidence, TokenEvidence
from medfuse_core.explain.evidence.inputs import with_input

if TYPE_CHECKING:
    from medfuse_core.explain.evidence.explainer import EvidenceExplainer

SENTENCE_IG_STEPS = 32  # a review's sentence map at most: |convergence delta| at 32 steps max 9.7e-7 over 10 demo
# patients (1.4e-6 at 64), the sentences ranked as a 128-step reference does (benchmarks/results/review_evidence.md)


def sentence_attributions(ex: EvidenceExplainer, label: str | int, n_steps: int = 64) -> tuple[list[SentenceEvidence], float]:
    """IG on the cached sentence embeddings (baseline 0), one value per sentence, ranked."""
    from captum.attr import IntegratedGradients

    sentences = ex.index.sentences
    if not ex.has("notes") or not sentences:
        return [], 0.0
    k = ex.label_index(label)
    x = ex.batch.note_embeddings.float()
    with ex.gradients():
        attr, delta = IntegratedGradients(ex.forward_of("note_embeddings", "notes")).attribute(
            x, baselines=empty_sentence(ex).expand_as(x).contiguous(), target=k, n_steps=n_steps,
            return_convergence_delta=True)
    per = attr.detach()[0].double().sum(-1).cpu().numpy()
    out = [SentenceEvidence(i, s.note_index, s.start, s.end, s.text, float(per[i])) for i, s in enumerate(sentences)]
    out.sort(key=lambda e: -abs(e.attribution))
    return out, float(delta.abs().max())

def empty_sentence(ex: EvidenceExplainer) -> torch.Tensor:
    """The sentence-level baseline (D,): the text model's vector of an empty sentence ([CLS] [SEP]).

    Not the zero vector: the adapter starts with a LayerNorm, which is scale invariant, so on the
    path from 0 to a (unit-norm) sentence vector almost all change happens in the first few
    percent and IG's quadrature misses it (completeness gaps of 25% measured). The empty
    sentence is a unit vector too, "no content" as the token-level [PAD] baseline is. Without a
    text model: zeros.
    """
    if "empty_sentence" not in ex.cache:
        d = ex.batch.note_embeddings.shape[-1]
        if ex.backbone is None:
            ex.cache["empty_sentence"] = torch.zeros(d, device=ex.batch.note_embeddings.device)
        else:
            ex.cache["empty_sentence"] = ex.backbone.embed([""])[0].to(ex.batch.note_embeddings.device)
    return ex.cache["empty_sentence"]

def token_attributions(ex: EvidenceExplainer, label: str | int, sentence: int, n_steps: int = 16) -> tuple[list[TokenEvidence], float]:
    """Word-piece attributions of one sentence (`sentences_token_attributions` of that sentence alone)."""
    return sentences_token_attributions(ex, label, [sentence], n_steps)


def sentences_token_attributions(ex: EvidenceExplainer, label: str | int, sentences: list[int],
                                 n_steps: int = 16) -> tuple[list[TokenEvidence], float]:
    """IG on the word-piece embeddings of each of `sentences`, each read as the model reads it (its prompt
    template around it, for a decoder LLM too), the rest of the patient fixed; baseline: the embeddings of
    the sentence's tokens as [PAD], special and prompt tokens kept (`TextBackbone.tokenize_for_attribution`).
    Tokens in the order of `sentences`, then of the text; the largest |convergence delta| of the sentences.

    The sentences are attributed in one Captum call, as examples of one batch: example i is the patient
    with only sentence i replaced, so its attributions are sentence i's own (the model reads every row of
    a batch independently; tested against one call per sentence). Each sentence is tokenized alone and
    padded on the right to the longest with masked [PAD] positions, where input and baseline are equal
    (attribution 0 there, and no real token attends to them). One pass of the text model over all the
    steps of all the sentences, and one for Captum's convergence check, instead of one of each per
    sentence: the word-level note evidence was half of a full review's time.

    Plain IntegratedGradients on `inputs_embeds` rather than LayerIntegratedGradients on the
    input-embedding layer: the same attributions (that layer's output is what `inputs_embeds`
    replaces), without LayerIG's two extra forward passes through the text model that only read the
    layer's output at the input and the baseline.
    """
    from captum.attr import IntegratedGradients

    if ex.backbone is None or not ex.has("notes") or not sentences:
        return [], 0.0
    k = ex.label_index(label)
    bb = ex.backbone
    encoded = [bb.tokenize_for_attribution(ex.index.sentences[i].text) for i in sentences]
    length = max(e["input_ids"].shape[1] for e in encoded)
    pad = bb.tokenizer.pad_token_id

    def padded(name: str, value: int) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(e[name], (0, length - e[name].shape[1]), value=value)
                          for e in encoded])

    ids, attention, baseline = padded("input_ids", pad), padded("attention_mask", 0), padded("baseline_ids", pad)
    base_notes = ex.batch.note_embeddings.float()
    which = torch.tensor(sentences, device=base_notes.device)  # the sentence example i replaces

    def forward(embeddings: torch.Tensor) -> torch.Tensor:
        # Captum stacks the examples step by step: row r is example r % len(sentences)
        n = embeddings.shape[0]
        example = torch.arange(n, device=attention.device) % len(sentences)
        vectors = bb(None, attention[example], inputs_embeds=embeddings).float().to(base_notes.device)  # (n, D)
        notes = base_notes.expand(n, -1, -1).clone()
        notes[torch.arange(n, device=notes.device), which[example.to(notes.device)]] = vectors
        return ex.logits_of("notes", with_input(ex.batch, "note_embeddings", notes))

    with ex.gradients():
        with torch.no_grad():
            embed = bb.embedding_layer
            inputs, baselines = embed(ids), embed(baseline)
        attr, delta = IntegratedGradients(forward).attribute(
            inputs, baselines=baselines, target=k, n_steps=n_steps, return_convergence_delta=True)
    per = attr.detach().double().sum(-1).cpu().numpy()  # (sentences, length)
    out = []
    for row, (i, enc) in enumerate(zip(sentences, encoded)):
        s = ex.index.sentences[i]
        out += [TokenEvidence(i, s.note_index, s.start + a, s.start + b, token, float(per[row, t]))
                for t, a, b, token in enc["spans"]]
    return out, float(delta.abs().max())
