"""Clinical notes -> sentences with exact character offsets, the unit the text model embeds.

Offsets are Python string indices (code points) into the note's own text, so
`note.text[s.start:s.end] == s.text` always holds. They are what attributions are matched against
(the planted `{start, end}` spans of truth.json) and what the dashboard highlights.

Clinical text is not prose, so the splitter knows a few of its habits:

* every line is its own unit (lists, vitals rows, "PMH:" blocks); blank lines and lines with no
  letter or digit ("-----") give nothing;
* a leading bullet ("- ", "* ", "• ", "# ", "1. ", "2) ", "a) ") is left out of the sentence;
* a line that is only a header ("PMH:", "Assessment and Plan:") is dropped (`keep_headers=False`);
  a header with content after it stays with that content ("CC: weakness");
* an inline section header from a known list ("... DM2, HTN Plan: continue", any "...Hx:") starts
  a new sentence even without a full stop before it; a header directly after another ("Exam: Gen:
  NAD") does not, nor does an all-caps problem label ("# Acute on chronic CHF: diurese");
* a full stop ends a sentence only before whitespace and then anything but a lower-case letter:
  decimals ("38.5"), "A&Ox3.", "s/p" and lower-case continuations never split; titles ("Dr.", "Mr.") and "e.g."/"i.e." never split; other abbreviations ("pt.",
  "b.i.d.", "approx.") split only before an upper-case word; "?" and "!" split like a full stop;
* a sentence longer than `max_words` words is cut at word boundaries into near-equal chunks
  (a text model truncates at `max_tokens`; chunking keeps the tail of a long sentence).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from medfuse_core.record import Note

__all__ = ["Sentence", "NoteSentence", "split_sentences", "note_sentences", "DEFAULT_MAX_WORDS"]

DEFAULT_MAX_WORDS = 60  # ~ 80-100 WordPiece tokens: under the default max_tokens=128

# Line breaks as str.splitlines knows them (\r\n is two breaks, giving one empty line: harmless).
_LINE = re.compile(r"[^\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
_BULLET = re.compile(r"(?:[-*\u2022\u00b7\u2023\u25aa\u25cf\u25e6\u2013\u2014>#]+|\d{1,2}[.)]|\(?[a-zA-Z]\))\s+")
# A header: a short capitalised label followed by a colon ("HPI:", "FHx:", "Assessment and Plan:").
_HEADER = re.compile(r"[A-Z][A-Za-z/&]{0,24}(?:[ -][A-Za-z/&]{1,24}){0,3}:(?=\s|$)")
# Inline headers that start a new sentence mid-line: well-known labels and any "...Hx" label.
_KNOWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "CC", "HPI", "PMH", "PSH", "FHx", "SHx", "Hx", "ROS", "Exam", "PE", "Meds", "Medications",
        "Allergies", "Labs", "Imaging", "Micro", "Assessment", "Plan", "A/P", "Impression", "Dispo",
        "Disposition", "Code", "Access", "PPx", "Prophylaxis", "FEN", "Neuro", "CV", "Cardiac",
        "Resp", "Pulm", "GI", "GU", "GI/GU", "Renal", "ID", "Heme", "Endo", "Skin", "Social",
        "Activity", "Pain", "Gen", "General", "HEENT", "Neck", "Lungs", "Heart", "Abd", "Ext",
        "Extremities", "Vitals", "Interval events", "Events", "Subjective", "Objective",
        "Assessment and Plan", "Hospital course", "Past medical history", "Social history",
        "Family history", "Chief complaint", "Physical exam",
    )
)
# Zero-width, so overlapping candidates are all seen ("HTN Plan:" offers "HTN Plan" and "Plan").
_INLINE_HEADER = re.compile(r"(?<=\s)(?=([A-Z][A-Za-z/&]{0,24}(?: [A-Za-z]{1,12}){0,2}):\s)")
_TERMINATOR = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_TITLES = frozenset({"dr", "mr", "mrs", "ms", "prof", "st", "e.g", "i.e", "eg", "ie", "cf", "vs", "viz"})
_ABBREVIATIONS = frozenset({
    "pt", "pts", "approx", "hx", "dx", "tx", "rx", "sx", "fx", "no", "nos", "etc", "yo", "y.o", "wk",
    "wks", "yr", "yrs", "hr", "hrs", "min", "mins", "mg", "mcg", "ml", "cc", "tab", "tabs", "cap", "q",
    "b.i.d", "t.i.d", "q.i.d", "q.d", "q.h.s", "q.o.d", "p.o", "p.r.n", "i.v", "i.m", "s.c", "a.m",
    "p.m", "h.s", "o.d", "o.s", "o.u", "u.s", "w/o", "c/o", "s/p", "dept", "est",
})
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Sentence:
    """One sentence (or chunk of a long one): `text == note_text[start:end]`."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class NoteSentence:
    """A sentence of one of a patient's notes: `notes[note_index].text[start:end] == text`."""

    note_index: int
    start: int
    end: int
    text: str
    time: pd.Timestamp | None


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _has_content(fragment: str) -> bool:
    return any(ch.isalnum() for ch in fragment)


def _is_header_only(fragment: str) -> bool:
    return _HEADER.fullmatch(fragment) is not None


def _is_known_header(label: str) -> bool:
    low = label.lower()
    # Not any all-caps word: problem-list labels ("# Acute on chronic CHF: ...") must stay whole.
    return low in _KNOWN_HEADERS or (low.endswith("hx") and len(low) <= 6)


def _ends_sentence(line: str, term_start: int, term_end: int) -> bool:
    """Whether the terminator line[term_start:term_end] ends a sentence (it is followed by space)."""
    rest = line[term_end:].lstrip()
    if not rest:
        return True
    nxt = rest[0]
    punct = line[term_start:term_end]
    if "." not in punct:  # "?" or "!"
        return not nxt.islower()
    # The word the full stop closes, e.g. "pt", "b.i.d", "Dr", "38.5".
    before = line[:term_start]
    word_match = re.search(r"(\S+)$", before)
    word = word_match.group(1) if word_match else ""
    word = word.lstrip("([\"'\u201c\u2018")
    low = word.lower()
    if low in _TITLES:
        return False
    upper_next = nxt.isupper()
    if low in _ABBREVIATIONS or low.rstrip(".") in _ABBREVIATIONS or re.fullmatch(r"(?:[a-z]\.)+[a-z]", low):
        return upper_next
    return not nxt.islower()  # upper case, digit, bracket, bullet, symbol, emoji


def _line_pieces(line: str) -> list[tuple[int, int]]:
    """Sentence boundaries inside one line (offsets relative to the line)."""
    cuts = [0]
    for m in _TERMINATOR.finditer(line):
        if _ends_sentence(line, m.start(), m.end()):
            cuts.append(m.end())
    header_end = -1
    for m in _INLINE_HEADER.finditer(line):
        if m.start() < header_end or not _is_known_header(m.group(1)):
            continue
        header_end = m.start() + len(m.group(1))
        before = line[: m.start()].rstrip()
        if not before or before.endswith(":"):  # "Exam: Gen: ..." keeps together
            continue
        last_cut = max(c for c in cuts if c <= m.start())
        if not _has_content(line[last_cut : m.start()]):
            continue
        cuts.append(m.start())
    cuts = sorted(set(cuts)) + [len(line)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _chunk(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    words = [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]
    if max_words <= 0 or len(words) <= max_words:
        return [(start, end)]
    n_chunks = math.ceil(len(words) / max_words)
    size = math.ceil(len(words) / n_chunks)
    return [(words[i][0], words[min(i + size, len(words)) - 1][1]) for i in range(0, len(words), size)]


def split_sentences(text: str, max_words: int = DEFAULT_MAX_WORDS, keep_headers: bool = False) -> list[Sentence]:
    """Sentences of a clinical note, in text order, with exact offsets (see the module docstring)."""
    out: list[Sentence] = []
    for line_match in _LINE.finditer(text or ""):
        line, base = line_match.group(0), line_match.start()
        first, last = _trim(line, 0, len(line))
        if first == last:
            continue
        bullet = _BULLET.match(line, first)
        if bullet and bullet.end() < last:
            first = bullet.end()
        body = line[:last]
        for a, b in _line_pieces(body):
            a, b = _trim(body, max(a, first), b)
            if a >= b:
                continue
            fragment = body[a:b]
            if not _has_content(fragment):
                continue
            if not keep_headers and _is_header_only(fragment):
                continue
            for ca, cb in _chunk(text, base + a, base + b, max_words):
                out.append(Sentence(ca, cb, text[ca:cb]))
    return out


def _sort_key(item: tuple[int, Note]) -> tuple[int, pd.Timestamp, int]:
    i, note = item
    time = note.time
    if time is None or pd.isna(time):
        return (0, pd.Timestamp.min, i)
    return (1, pd.Timestamp(time), i)


def note_sentences(
    notes: Sequence[Note],
    max_sentences: int | None = None,
    max_words: int = DEFAULT_MAX_WORDS,
    keep_headers: bool = False,
) -> list[NoteSentence]:
    """All sentences of a patient's notes in chronological order; the most recent `max_sentences` kept.

    Notes are ordered by time (stable; notes without a time count as the oldest); sentences keep
    their text order inside a note. `note_index` is the position in the given `notes` list.
    """
    out: list[NoteSentence] = []
    for i, note in sorted(enumerate(notes), key=_sort_key):
        time = None if note.time is None or pd.isna(note.time) else note.time
        for s in split_sentences(note.text, max_words=max_words, keep_headers=keep_headers):
            out.append(NoteSentence(i, s.start, s.end, s.text, time))
    if max_sentences is not None and max_sentences >= 0 and len(out) > max_sentences:
        out = out[len(out) - max_sentences :]
    return out
