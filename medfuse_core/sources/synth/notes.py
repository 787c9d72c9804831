"""Synthetic clinical notes with character-exact planted spans and recorded distractors.

A stay gets an admission H&P (physician), a day-2 progress note that copies the history and plan
forward (as real progress notes do), and one to three nursing notes that copy each other's
boilerplate. Text is assembled from tagged pieces, so the offsets of every planted phrase
(evidence) and every negated or family-history mention (distractor) are known exactly. Light noise
(abbreviations, the odd typo) only touches untagged filler, never a span.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medfuse_core.record import Note
from medfuse_core.sources.synth import phrases as P
from medfuse_core.sources.synth.evidence import NoteSpan
from medfuse_core.sources.synth.plan import PatientPlan

NOTE_DISEASES = tuple(P.KEYWORDS)  # diseases whose route can include notes
_CHRONIC = ("chf", "diabetes", "hypertension", "copd")
_ACUTE = ("pneumonia", "sepsis")


@dataclass(frozen=True)
class _Piece:
    text: str
    disease: str = ""
    kind: str = ""  # "" filler | "evidence" | "negated" | "family"


Section = list[_Piece]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _typo(rng: np.random.Generator, text: str) -> str:
    """Swap two inner letters of one longer word: the kind of slip a hurried note has."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    if not candidates:
        return text
    i = candidates[int(rng.integers(len(candidates)))]
    w = words[i]
    j = int(rng.integers(1, len(w) - 2))
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def _noisy(rng: np.random.Generator, section: Section, p: float = 0.08) -> Section:
    return [_Piece(_typo(rng, x.text)) if not x.kind and rng.random() < p else x for x in section]


def _render(sections: list[Section]) -> tuple[str, list[tuple[int, int, _Piece]]]:
    text, tagged, pos = [], [], 0
    for section in sections:
        for piece in section:
            if piece.kind:
                tagged.append((pos, pos + len(piece.text), piece))
            text.append(piece.text)
            pos += len(piece.text)
    return "".join(text), tagged


class _Writer:
    """Draws the phrases of one stay from the plan: what the notes may say about each disease."""

    def __init__(self, rng: np.random.Generator, plan: PatientPlan):
        self.rng = rng
        self.plan = plan
        self.say = [d for d in NOTE_DISEASES if plan.plants(d, "notes")]
        # weak evidence (a weak positive, or a mimic: "?pneumonia") is one line of the problem list only
        self.full = [d for d in self.say if plan.strength(d) == 1.0]
        self.negate = [d for d in NOTE_DISEASES if not plan.conditions.has(d) and rng.random() < 0.25
                       and not plan.plants(d, "notes")]

    def ev(self, disease: str, bank: dict[str, tuple[str, ...]]) -> _Piece:
        return _Piece(_pick(self.rng, bank[disease]), disease, "evidence")

    def header(self, title: str) -> Section:
        c = self.plan.conditions
        sex = "M" if c.sex == "M" else "F"
        return [_Piece(f"{title}\n{int(c.age)} yo {sex}\n\n")]

    def hpi(self) -> Section:
        rng, c = self.rng, self.plan.conditions
        complaint = _pick(rng, P.COMPLAINTS)
        out: Section = [_Piece(f"CC: {complaint}\n\nHPI: {int(c.age)} yo {'man' if c.sex == 'M' else 'woman'} with PMH ")]
        history = [d for d in self.full if d in _CHRONIC]
        items: Section = [self.ev(d, P.HISTORY) for d in history]
        items += [_Piece(h) for h in rng.choice(P.OTHER_HISTORY, size=int(rng.integers(1, 3)), replace=False)]
        order = rng.permutation(len(items))
        for k, i in enumerate(order):
            out.append(items[i])
            out.append(_Piece(", " if k < len(order) - 2 else " and " if k == len(order) - 2 else ""))
        out.append(_Piece(f" who presents with {complaint}."))
        acute = [d for d in self.full if d in P.HPI_ACUTE and d in _ACUTE + ("chf",)]
        for d in acute:
            if rng.random() < 0.7:
                out += [_Piece(" ED workup notable for "), self.ev(d, P.HPI_ACUTE), _Piece(".")]
        for d in self.negate:
            if rng.random() < 0.5:
                out += [_Piece(" "), _Piece(_cap(_pick(rng, P.NEGATED[d])), d, "negated"), _Piece(".")]
        out.append(_Piece("\n\n"))
        return out

    def pmh(self) -> Section:
        rng = self.rng
        out: Section = [_Piece("PMH:\n")]
        lines: list[Section] = [[_Piece("- "), self.ev(d, P.HISTORY), _Piece("\n")] for d in self.full if d in _CHRONIC]
        lines += [[_Piece(f"- {h}\n")] for h in rng.choice(P.OTHER_HISTORY, size=int(rng.integers(2, 5)), replace=False)]
        for i in rng.permutation(len(lines)):
            out += lines[i]
        out.append(_Piece("\nMedications:\n"))
        meds: list[Section] = [[_Piece("- "), self.ev(d, P.MEDICATIONS), _Piece("\n")]
                               for d in self.full if d in P.MEDICATIONS and rng.random() < 0.85]
        meds += [[_Piece(f"- {m}\n")] for m in rng.choice(P.OTHER_MEDS, size=int(rng.integers(2, 5)), replace=False)]
        for i in rng.permutation(len(meds)):
            out += meds[i]
        return out + [_Piece("\n")]

    def family_social(self) -> Section:
        rng = self.rng
        out: Section = [_Piece("FHx: ")]
        family = [d for d in P.FAMILY if rng.random() < 0.2]
        if not family:
            out.append(_Piece("noncontributory."))
        for k, d in enumerate(family):
            out += [_Piece(" " if k else ""), _Piece(_pick(rng, P.FAMILY[d]), d, "family")]
        out.append(_Piece(f"\nSHx: {_pick(rng, P.SOCIAL)}\nROS: {_pick(rng, P.ROS)}\n\nExam: {_pick(rng, P.EXAM)}\n\n"))
        return out

    def plan_section(self, title: str = "Assessment and Plan:") -> Section:
        rng = self.rng
        out: Section = [_Piece(f"{title}\n")]
        lines: list[Section] = []
        for d in self.say:
            line: Section = [_Piece("# "), self.ev(d, P.PROBLEMS), _Piece(": ")]
            if d in self.full and rng.random() < 0.6:
                line += [self.ev(d, P.PLAN_EXTRA), _Piece(", ")]
            line.append(_Piece(f"{_pick(rng, P.GENERIC_PLAN)}\n"))
            lines.append(line)
        for d in self.negate:
            if rng.random() < 0.4:
                lines.append([_Piece("# "), _Piece(_cap(_pick(rng, P.NEGATED[d])), d, "negated"),
                              _Piece(f", {_pick(rng, P.GENERIC_PLAN)}\n")])
        order = rng.permutation(len(lines))
        for i in order:
            out += lines[i]
        for filler in rng.choice(P.FILLER_PLAN, size=int(rng.integers(2, 4)), replace=False):
            out.append(_Piece(f"{filler}\n"))
        return out

    def nursing_body(self) -> Section:
        rng = self.rng
        by_system: dict[str, list[str]] = {}
        for line in P.NURSING_LINES:
            by_system.setdefault(line.split(":")[0], []).append(line)
        systems = rng.choice(sorted(by_system), size=4, replace=False)
        lines: list[Section] = [[_Piece(f"{_pick(rng, tuple(by_system[s]))}\n")] for s in systems]
        for d in self.full:
            if rng.random() < 0.6:
                lines.append([self.ev(d, P.NURSING), _Piece(".\n")])
        out: Section = []
        for i in rng.permutation(len(lines)):
            out += lines[i]
        return out


def _times(rng: np.random.Generator, plan: PatientPlan) -> dict[str, list[float]]:
    n_nursing = int(rng.integers(1, 4))
    shifts = sorted(rng.choice([7.0, 19.0, 31.0, 43.0], size=n_nursing, replace=False))
    return {
        "hp": [float(rng.uniform(0.5, 4.0))],
        "progress": [float(rng.uniform(20.0, 30.0))] if rng.random() < 0.8 else [],
        "nursing": [min(plan.end_hours - 0.5, s + float(rng.uniform(-1.0, 1.5))) for s in shifts],
    }


def make_notes(rng: np.random.Generator, plan: PatientPlan) -> tuple[list[Note], list[NoteSpan]]:
    """The stay's notes (in time order) and every tagged span: evidence and distractors."""
    if not plan.available["notes"]:
        return [], []
    w = _Writer(rng, plan)
    times = _times(rng, plan)
    drafts: list[tuple[float, str, list[Section]]] = []
    hpi, pmh, social, assess = w.hpi(), w.pmh(), w.family_social(), w.plan_section()
    drafts.append((times["hp"][0], "Physician ", [w.header("Admission History and Physical"), _noisy(rng, hpi),
                                                   pmh, _noisy(rng, social), assess]))
    for t in times["progress"]:  # copy-forward of history and plan, a new interval line
        interval = [_Piece(f"Interval events: {_pick(rng, ('none overnight', 'pt rested comfortably', 'no acute events'))}.\n\n")]
        drafts.append((t, "Physician ", [w.header("ICU Progress Note"), interval, pmh,
                                         [_Piece("Exam: unchanged from prior.\n\n")], assess]))
    body: Section = w.nursing_body()
    for t in times["nursing"]:
        drafts.append((t, "Nursing", [[_Piece("NURSING PROGRESS NOTE\n")], _noisy(rng, body, 0.1),
                                      [_Piece(f"{_pick(rng, P.NURSING_PLAN)}\n")]]))
        if rng.random() < 0.5:  # next shift rewrites, otherwise it copies the note forward
            body = w.nursing_body()
    drafts.sort(key=lambda d: d[0])
    notes: list[Note] = []
    spans: list[NoteSpan] = []
    for i, (t, category, sections) in enumerate(drafts):
        text, tagged = _render(sections)
        when = (plan.index_time + pd.Timedelta(minutes=round(t * 60))).floor("min")
        notes.append(Note(time=when, category=category.strip(), text=text))
        spans += [NoteSpan(p.disease, i, a, b, p.text, p.kind) for a, b, p in tagged]
    return notes, spans
