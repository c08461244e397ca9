"""The default summarizer: extractive, local, pure Python.

No network and no model download, so a fresh install can summarize out of the box. The
tldr is a graph ranking of the transcript's own sentences; decisions, action items and
Q/A pairs come from conversational cues ("we decided to", "Priya will", "Marcus, can
you", a question and the next speaker's reply). The cues are English; other languages
still get a tldr (the ranking is language-neutral) and pass their ``lang`` through.
Owners are recognised by capitalisation, so all-lower-case recognizer output keeps its
decisions, Q/A and "I'll ..." items but loses "Priya will ..." owners.

Cost is linear in the transcript: the sentence graph is never materialised (see
:func:`_rank`), so a one-hour meeting (~9,000 words) takes about 0.1 s of CPU.

Questions (:meth:`ExtractiveSummarizer.ask`) are answered by retrieval, not generation:
the lines ranked by BM25 against the question (speaker names count as words of their
lines), quoted as they are and marked ``extractive``. A custom summary ``prompt`` is
ignored (there is no model to follow it), and documents are refused as unconfigured.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from mcustt.summarizers.base import (
    ActionItem,
    Answer,
    Citation,
    Line,
    Summarizer,
    SummaryContent,
    SummaryResult,
)
from mcustt.summarizers.bm25 import BM25

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

MODEL = "extractive-v1"

# Caps keep an hour-long meeting's summary readable; when a list overflows, the
# best-ranked entries are kept (in transcript order).
MAX_DECISIONS = 12
MAX_ACTION_ITEMS = 20
MAX_QA = 8
#: a tldr sentence needs this many words; shorter ones are acknowledgements, not content
MIN_TLDR_WORDS = 5
#: longer "sentences" are run-ons (no punctuation) and are cut into pieces this long
MAX_SENTENCE_WORDS = 60
RUN_ON_CHUNK_WORDS = 30
#: two picks whose cosine similarity exceeds this say the same thing
REDUNDANT = 0.5
#: two extracted items whose content-word Jaccard reaches this are duplicates
DUPLICATE = 0.7
DAMPING = 0.85
MAX_ITERATIONS = 50
CENTRALITY_WEIGHT = 0.6
#: content words at which a sentence counts as fully informative
SALIENT_TERMS = 6


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_STOPWORDS = _wordset(
    """
    a about above after again against all also am an and any are aren't as at be because
    been before being below between both but by can can't cannot could couldn't did didn't
    do does doesn't doing don't down during each few for from further had hadn't has hasn't
    have haven't having he he'd he'll he's her here here's hers herself him himself his how
    how's i i'd i'll i'm i've if in into is isn't it it's its itself let let's me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out
    over own same shan't she she'd she'll she's should shouldn't so some such than that
    that's the their theirs them themselves then there there's these they they'd they'll
    they're they've this those through to too under until up very was wasn't we we'd we'll
    we're we've were weren't what what's when when's where where's which while who who's
    whom why why's will with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves us just really actually basically maybe probably okay ok yeah yes
    yep no nope um uh uhm hmm mm oh ah like well right sure gonna wanna gotta kind sort thing
    things stuff lot lots know think mean going get got go goes one two also still even
    much many good great thanks thank please hi hello bye everyone everybody anyone someone
    something anything want need say said see look looks via etc
    de la el los las un una y o en que es por para con del al lo se su sus no si mas pero
    como este esta esto todo todos muy ya hay le les nos
    """
)

_WEEKDAYS_MONTHS = _wordset(
    """
    monday tuesday wednesday thursday friday saturday sunday january february march april
    may june july august september october november december today tomorrow yesterday
    """
)

#: capitalised words that start sentences but never name a person
_NOT_NAMES = (
    _STOPWORDS
    | _WEEKDAYS_MONTHS
    | _wordset(
        """
        i the we it this that they he she you everyone everybody someone somebody nobody
        anyone anybody who what there here then also so and but or now next team great
        alright all both each either neither none nothing something everything
        """
    )
)

_NOUNISH_SUFFIXES = ("tion", "sion", "ment", "ness", "ity", "ing", "ance", "ence", "ship")

#: words after "X will" that describe an event rather than a task someone does
_NOT_TASK_VERBS = _wordset(
    """
    be been being happen seem remain become cost last depend arrive come stay need take
    know think guess say admit bet mention note tell try see hear repeat explain clarify
    share show interrupt ask start finish just also
    """
)

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_SPACE = re.compile(r"\s+")
_NOISE = re.compile(r"\[[^\]]*\]|<[^>]*>")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])[\"'\u201d\u2019)\]]*\s+")
_ABBREVIATION_END = re.compile(r"\b(?:mr|mrs|ms|dr|prof|vs|e\.g|i\.e|st|jr|sr)\.$", re.I)
_TERMINAL = re.compile(r"[.!?…]+[\"'\u201d\u2019)\]]*$")
_TRAILING_PUNCT = re.compile(r"[\s.,;:!?…]+$")

# ASR output often has no punctuation at all; a line that opens like a question is one.
_QUESTION_OPENER = re.compile(
    r"^(?:(?:so|and|but|okay|ok|also|then)\s+)?(?:do|does|did|can|could|should|would|will|"
    r"is|are|was|were|have|has|what|when|where|who|whom|whose|why|how|which|shall|any)\b",
    re.I,
)
_TAG_QUESTION = re.compile(
    r"^(?:right|okay|ok|yes|no|really|any questions|questions|you know|make sense|"
    r"does that make sense|got it|all good|everyone|ready|sound good|sounds good)\W*$",
    re.I,
)
_AFFIRMATIVE = re.compile(
    r"^(?:yes|yeah|yep|yup|sure|of course|absolutely|definitely|certainly|will do|on it|"
    r"i'm on it|i can|i will|i'll|ok|okay|no problem|sounds good|happy to|consider it done)\b",
    re.I,
)
_ANSWER_LEAD = re.compile(r"^(?:yes|yeah|yep|no|nope|sure|right|exactly|correct)\b", re.I)
_NEGATIVE = re.compile(
    r"^(?:no|nope|sorry|i can't|i cannot|i won't|not|unfortunately|i don't think)\b", re.I
)

_FILLER_LEAD = re.compile(
    r"^(?:(?:so|and|okay|ok|well|alright|all right|right|then|also|now|great|good|"
    r"just|um|uh|yeah|please|basically|i think)\b[\s,]*)+",
    re.I,
)

# Case-sensitive inside otherwise case-insensitive patterns: a name is Capitalised.
_NAME = r"(?-i:[A-Z][a-z]+(?:['\u2019-][A-Z]?[a-z]+)?(?:\s+[A-Z][a-z]+)?)"

_DECISION_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I), template)
    for pattern, template in (
        (r"\b(?:decided|agreed)\s+(?:to|that)\s+(?P<rest>.+)", "{rest}"),
        (r"\b(?:decided|agreed)\s+not\s+to\s+(?P<rest>.+)", "Do not {rest}"),
        (r"\b(?:decided|agreed)\s+on\s+(?P<rest>.+)", "Go with {rest}"),
        (r"\b(?:the\s+)?decision\s+(?:is|was)\s+(?:to\s+|that\s+)?(?P<rest>.+)", "{rest}"),
        (r"\bdecision\s*[:\-]\s*(?P<rest>.+)", "{rest}"),
        (r"\blet(?:'s|\u2019s|\s+us)\s+go\s+with\s+(?P<rest>.+)", "Go with {rest}"),
        (r"\bwe(?:'ll|\u2019ll|\s+will)\s+go\s+with\s+(?P<rest>.+)", "Go with {rest}"),
        (r"\bwe(?:'re|\u2019re|\s+are)\s+going\s+with\s+(?P<rest>.+)", "Go with {rest}"),
        (r"\bwe(?:'re|\u2019re|\s+are)\s+going\s+to\s+(?P<rest>.+)", "{rest}"),
        (r"\bwe(?:'ll|\u2019ll|\s+will)\s+ship\s+(?P<rest>.+)", "Ship {rest}"),
        (r"^(?P<rest>.*\bwill\s+ship\b.*)$", "{rest}"),
        (r"^(?P<rest>.*\b(?:is|are|was|were|been|got|we|they)\s+approved\b.*)$", "{rest}"),
    )
)
# "we haven't decided to", "nobody agreed that": the cue is there, the decision is not.
_NEGATED_CUE = re.compile(
    r"(?:\b(?:not|never|yet\s+to|undecided)\b|n['\u2019]t\b)[^.]*\b(?:decided|agreed|decision|approved)\b",
    re.I,
)
_BARE_AGREEMENT = re.compile(
    r"^(?:(?:ok|okay|yes|yeah)\W+)?(?:agreed|approved|deal|sounds good|sounds like a plan|"
    r"let(?:'s|\u2019s|\s+us)\s+do\s+(?:it|that)|that works|done)\W*$",
    re.I,
)
_PROPOSAL_LEAD = re.compile(
    r"^(?:let(?:'s|\u2019s|\s+us)|we\s+should|we\s+could|i\s+propose(?:\s+that)?(?:\s+we)?|"
    r"i\s+suggest(?:\s+that)?(?:\s+we)?|how\s+about(?:\s+we)?|what\s+if\s+we|shall\s+we|"
    r"should\s+we)\s+(?P<rest>.+)",
    re.I,
)
_PROPOSAL_ANYWHERE = re.compile(r"\b(?:should|needs?|must|ought\s+to)\b", re.I)
_REFERENT = re.compile(
    r"^(?P<np>(?:the|our|this|that|their|your|my)\s+(?:[\w-]+\s+){0,3}?[\w-]+)\s+"
    r"(?:is|are|was|were|has|have|looks|will|should|needs|can)\b",
    re.I,
)

_OWNER_WILL = re.compile(
    rf"(?:^|(?<=[\s,;:]))(?P<owner>{_NAME})\s*(?:,\s*you(?:'ll|\u2019ll|\s+will|\s+should|"
    rf"\s+need\s+to|\s+can)|\s+(?:will|is\s+going\s+to|is\s+gonna|needs\s+to|has\s+to|"
    rf"should|can|is\s+to|agreed\s+to|volunteered\s+to|offered\s+to))\s+",
    re.I,
)
_SELF_WILL = re.compile(
    r"(?:^|\b)(?:i(?:'ll|\u2019ll|\s+will)|i(?:'m|\u2019m|\s+am)\s+(?:going\s+to|gonna)|"
    r"i\s+(?:need|have)\s+to|i\s+can\s+take|let\s+me)\s+(?:go\s+ahead\s+and\s+)?",
    re.I,
)
_REQUEST_NAMED = re.compile(
    rf"^(?P<owner>{_NAME})\s*,\s*(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?|please\s+)"
    r"(?P<task>.+)",
    re.I,
)
_REQUEST = re.compile(
    r"^(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?|please\s+)(?P<task>.+?)"
    rf"(?:\s*,\s*(?P<owner>{_NAME}))?\W*$",
    re.I,
)
# "action item: ...", "action item for Marcus, ...", "the action item is to ...", "todo: ...";
# a separator is required so "the action items from last week" is not one.
_ACTION_ITEM = re.compile(
    rf"\b(?:action\s+(?:item|point)(?:\s+for\s+(?P<owner>{_NAME}))?"
    r"(?:\s*[:\-\u2013,]|\s+is\s+(?:to\s+|that\s+)?)|to-?do\s*:)\s*(?P<task>.+)",
    re.I,
)
_NAMED_TASK = re.compile(
    rf"^(?P<owner>{_NAME})\s+(?:to|will|should|needs\s+to|has\s+to)\s+(?P<task>.+)", re.I
)
_TASK_TAIL = re.compile(r"(?:,?\s+please|,\s*(?:okay|ok|right|thanks))\W*$", re.I)


@dataclass(slots=True)
class _Sentence:
    idx: int
    line: int
    text: str
    speaker: str | None
    question: bool
    words: int
    terms: dict[str, float] = field(default_factory=dict)  # unit tf-idf vector
    score: float = 0.0


class ExtractiveSummarizer(Summarizer):
    name = "extractive"

    @property
    def model(self) -> str:
        return MODEL

    async def summarize(
        self, lines: Sequence[Line], *, lang: str, prompt: str | None = None
    ) -> SummaryResult:
        # ``prompt`` is ignored: cue rules and a sentence ranking cannot follow an
        # instruction (the README says so; a 400 would break clients that send one to
        # whichever engine the operator runs).
        # A snapshot: the caller may keep appending to a live transcript meanwhile.
        snapshot = list(lines)
        started = time.perf_counter()
        content = await asyncio.to_thread(summarize_lines, snapshot)
        log.debug(
            "summary.extractive",
            lines=len(snapshot),
            decisions=len(content.decisions),
            action_items=len(content.action_items),
            qa=len(content.qa),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return SummaryResult(content=content, model=MODEL, lang=lang)

    async def ask(self, lines: Sequence[Line], question: str, *, lang: str) -> Answer:
        snapshot = list(lines)
        citations = await asyncio.to_thread(relevant_lines, snapshot, question)
        if not citations:
            return Answer(answer=NO_ANSWER, citations=[], extractive=True, model=MODEL)
        quoted = "\n".join(f"{c.speaker}: {c.text}" if c.speaker else c.text for c in citations)
        return Answer(
            answer=f"{QUOTE_INTRO}\n{quoted}", citations=citations, extractive=True, model=MODEL
        )


#: What an extractive answer says of itself: a quotation, not a reply.
QUOTE_INTRO = (
    "No language model is configured, so this quotes the transcript lines most relevant "
    "to the question:"
)
NO_ANSWER = "No line of the transcript answers this question."
#: lines quoted at most, and how close to the best line's score another must come
MAX_CITATIONS = 3
RELATIVE_SCORE = 0.5


def relevant_lines(lines: Sequence[Line], question: str) -> list[Citation]:
    """The lines that best match ``question`` (BM25), in transcript order; none when no
    line shares a content word with it (CPU only: callers on the loop use a thread)."""
    query = _terms(question)
    kept = [line for line in lines if line.text.strip()]
    if not query or not kept:
        return []
    docs = [_terms(f"{line.text} {line.speaker or ''}") for line in kept]
    scores = BM25(docs).scores(query)
    best = max(scores)
    if best <= 0.0:
        return []
    ranked = sorted(range(len(kept)), key=lambda i: -scores[i])
    picked = [i for i in ranked[:MAX_CITATIONS] if scores[i] >= best * RELATIVE_SCORE]
    return [
        Citation(
            seq=kept[i].seq,
            text=_SPACE.sub(" ", kept[i].text).strip(),
            speaker=(kept[i].speaker or "").strip() or None,
        )
        for i in sorted(picked)
    ]


def summarize_lines(lines: Sequence[Line]) -> SummaryContent:
    """The whole summary, synchronously (CPU only; callers on the event loop use a thread)."""
    sentences = _split(lines)
    if not sentences:
        return SummaryContent(tldr="")
    _rank(sentences)
    lowercase_words = _lowercase_vocabulary(sentences)
    decisions = _decisions(sentences)
    actions, requests = _action_items(sentences, lowercase_words)
    qa = _qa_pairs(sentences, skip=requests)
    decision_idx = {idx for idx, _ in decisions}
    return SummaryContent(
        tldr=_tldr(sentences, decision_idx),
        decisions=_best(decisions, sentences, MAX_DECISIONS),
        action_items=_best(actions, sentences, MAX_ACTION_ITEMS),
        qa=_best(qa, sentences, MAX_QA),
    )


# --- sentences ------------------------------------------------------------------------


def _split(lines: Sequence[Line]) -> list[_Sentence]:
    out: list[_Sentence] = []
    for line_no, line in enumerate(lines):
        text = _SPACE.sub(" ", _NOISE.sub(" ", line.text)).strip()
        if not text:
            continue
        speaker = (line.speaker or "").strip() or None
        unpunctuated = not any(c in text for c in ".?!…")
        pieces: list[str] = []
        for piece in _SENTENCE_BREAK.split(text):
            # Splitting after "Dr." or "e.g." would cut a sentence in two; glue it back.
            if pieces and _ABBREVIATION_END.search(pieces[-1]):
                pieces[-1] = f"{pieces[-1]} {piece}"
            else:
                pieces.append(piece)
        for piece in _bounded(pieces):
            words = _WORD.findall(piece)
            if not words:
                continue
            question = piece.endswith("?") or (
                unpunctuated and _QUESTION_OPENER.match(piece) is not None
            )
            out.append(
                _Sentence(
                    idx=len(out),
                    line=line_no,
                    text=piece,
                    speaker=speaker,
                    question=question,
                    words=len(words),
                )
            )
    return out


def _bounded(pieces: list[str]) -> Iterator[str]:
    """Pieces cut to at most :data:`MAX_SENTENCE_WORDS` words.

    Unpunctuated speech recognition output, or a transcript pasted as one line, would
    otherwise be one endless "sentence" and become the whole tldr.
    """
    for piece in pieces:
        words = piece.split()
        if len(words) <= MAX_SENTENCE_WORDS:
            yield piece.strip()
            continue
        for start in range(0, len(words), RUN_ON_CHUNK_WORDS):
            yield " ".join(words[start : start + RUN_ON_CHUNK_WORDS])


def _terms(text: str) -> list[str]:
    terms: list[str] = []
    for raw in _WORD.findall(text.lower()):
        word = raw.replace("\u2019", "'")
        if word in _STOPWORDS:
            continue
        if word.endswith("'s"):
            word = word[:-2]
        # Only the plural is folded: enough for "invoice"/"invoices", cheap, and it never
        # mangles names the way a full stemmer does.
        if len(word) > 4 and word.endswith("ies"):
            word = word[:-3] + "y"
        elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        if len(word) > 1 and word not in _STOPWORDS:
            terms.append(word)
    return terms


def _rank(sentences: list[_Sentence]) -> None:
    """Score sentences by centrality: continuous LexRank (TextRank with cosine weights).

    The similarity graph W = X·Xᵀ (X: one unit tf-idf row per sentence) is dense, so
    building it is quadratic. PageRank only needs W·u, which is X·(Xᵀ·u): two sparse
    passes over the term vectors per iteration, linear in the transcript's length.
    """
    n = len(sentences)
    counts: list[dict[str, int]] = []
    df: dict[str, int] = {}
    for s in sentences:
        tf: dict[str, int] = {}
        for term in _terms(s.text):
            tf[term] = tf.get(term, 0) + 1
        counts.append(tf)
        for term in tf:
            df[term] = df.get(term, 0) + 1
    for s, tf in zip(sentences, counts, strict=True):
        # Sublinear tf and smoothed idf: a word repeated in one rambling sentence should
        # not outweigh the meeting's recurring topics.
        vec = {
            t: (1.0 + math.log(c)) * (math.log((1 + n) / (1 + df[t])) + 1.0) for t, c in tf.items()
        }
        norm = math.sqrt(sum(v * v for v in vec.values()))
        s.terms = {t: v / norm for t, v in vec.items()} if norm else {}

    # The walk runs on integer term ids and flat lists: several times faster than dicts.
    ids: dict[str, int] = {}
    vectors = [[(ids.setdefault(t, len(ids)), v) for t, v in s.terms.items()] for s in sentences]
    self_sim = [1.0 if row else 0.0 for row in vectors]  # unit vectors, or empty

    # degree_i = sum over j != i of x_i·x_j = x_i·(sum of all x) - x_i·x_i
    total = [0.0] * len(ids)
    for row in vectors:
        for i, v in row:
            total[i] += v
    degree = [
        sum(v * total[i] for i, v in row) - own for row, own in zip(vectors, self_sim, strict=True)
    ]
    isolated = [d <= 1e-12 for d in degree]

    rank = [1.0 / n] * n
    for _ in range(MAX_ITERATIONS):
        u = [0.0 if iso else r / d for r, d, iso in zip(rank, degree, isolated, strict=True)]
        # Isolated sentences' rank would leak out of the walk; spread it evenly instead.
        leaked = sum(r for r, iso in zip(rank, isolated, strict=True) if iso)
        mixed = [0.0] * len(ids)  # Xᵀ·u
        for row, w in zip(vectors, u, strict=True):
            if w:
                for i, v in row:
                    mixed[i] += w * v
        base = (1.0 - DAMPING) / n + DAMPING * leaked / n
        new = [
            base + DAMPING * (sum(v * mixed[i] for i, v in row) - w * own)
            for row, w, own in zip(vectors, u, self_sim, strict=True)
        ]
        delta = sum(abs(a - b) for a, b in zip(new, rank, strict=True))
        rank = new
        # Only the order of the scores matters; this is far below any gap that changes it.
        if delta < 1e-7:
            break
    # Centrality alone cannot separate the sentences of a short meeting (most share no
    # words, so they tie); blending in how much content a sentence carries breaks the ties
    # while centrality still dominates on long transcripts.
    top = max(rank)
    for s, r in zip(sentences, rank, strict=True):
        salience = min(1.0, len(s.terms) / SALIENT_TERMS)
        s.score = CENTRALITY_WEIGHT * r / top + (1.0 - CENTRALITY_WEIGHT) * salience


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(t, 0.0) for t, v in a.items())


def _tldr(sentences: list[_Sentence], decision_idx: set[int]) -> str:
    n = len(sentences)
    want = 2 if n < 10 else 3 if n < 60 else 4
    eligible = [s for s in sentences if not s.question and s.words >= MIN_TLDR_WORDS and s.terms]
    if not eligible:
        # Nothing substantial was said; the longest utterances are the best there is.
        eligible = sorted(sentences, key=lambda s: (-s.words, s.idx))[:want]

    def weight(s: _Sentence) -> float:
        w = s.score
        # What was decided is what people read a tldr for.
        if s.idx in decision_idx:
            w *= 2.0
        # "Yes, we need one." means little without the question before it.
        if _ANSWER_LEAD.match(s.text):
            w *= 0.5
        return w

    chosen: list[_Sentence] = []
    for s in sorted(eligible, key=lambda s: (-weight(s), s.idx)):
        if all(_cosine(s.terms, c.terms) <= REDUNDANT for c in chosen):
            chosen.append(s)
            if len(chosen) == want:
                break
    return " ".join(_ensure_period(s.text) for s in sorted(chosen, key=lambda s: s.idx))


def _best(items: list[tuple[int, _T]], sentences: list[_Sentence], cap: int) -> list[_T]:
    """At most ``cap`` items, in transcript order: the best-ranked, varied ones if too many.

    An hour of meeting repeats itself ("is X covered by the load tests?" for five values
    of X); near-repeats of an item already kept only fill places nothing else wants.
    """
    if len(items) > cap:
        ranked = sorted(items, key=lambda it: (-sentences[it[0]].score, it[0]))
        kept: list[tuple[int, _T]] = []
        spare: list[tuple[int, _T]] = []
        for it in ranked:
            terms = sentences[it[0]].terms
            if len(kept) < cap and all(
                _cosine(terms, sentences[k[0]].terms) <= REDUNDANT for k in kept
            ):
                kept.append(it)
            else:
                spare.append(it)
        items = sorted(kept + spare[: cap - len(kept)], key=lambda it: it[0])
    return [item for _, item in items]


# --- phrasing helpers -----------------------------------------------------------------


def _ensure_period(text: str) -> str:
    return text if _TERMINAL.search(text) else text + "."


def _clause(text: str) -> str:
    """A tidy fragment: no filler lead-in, no trailing punctuation, capitalised."""
    text = _FILLER_LEAD.sub("", text.strip())
    text = _TRAILING_PUNCT.sub("", text)
    text = _TASK_TAIL.sub("", text)
    text = _TRAILING_PUNCT.sub("", text)
    return text[:1].upper() + text[1:] if text else text


def _key(text: str) -> frozenset[str]:
    return frozenset(_terms(text))


def _is_duplicate(key: frozenset[str], seen: Iterable[frozenset[str]]) -> bool:
    for other in seen:
        if key == other:
            return True
        union = len(key | other)
        if union and len(key & other) / union >= DUPLICATE:
            return True
    return False


# --- decisions ------------------------------------------------------------------------


def _decisions(sentences: list[_Sentence]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    seen: list[frozenset[str]] = []
    for s in sentences:
        text = _decision_text(s, sentences)
        if text is None:
            continue
        key = _key(text)
        if key and not _is_duplicate(key, seen):
            seen.append(key)
            found.append((s.idx, text))
    return found


def _decision_text(s: _Sentence, sentences: list[_Sentence]) -> str | None:
    if _BARE_AGREEMENT.match(s.text):
        # "Agreed." on its own ratifies what another speaker just proposed.
        prev = sentences[s.idx - 1] if s.idx else None
        if prev is None or prev.line == s.line or (prev.speaker == s.speaker and s.speaker):
            return None
        proposal = _PROPOSAL_LEAD.match(_FILLER_LEAD.sub("", prev.text))
        if proposal:
            return _clause(proposal["rest"])
        if not prev.question and _PROPOSAL_ANYWHERE.search(prev.text):
            return _clause(prev.text)
        return None
    if s.question or _NEGATED_CUE.search(s.text):
        return None
    for pattern, template in _DECISION_PATTERNS:
        m = pattern.search(s.text)
        if not m:
            continue
        rest = _TRAILING_PUNCT.sub("", m["rest"]).strip()
        rest = _resolve_it(rest, s, sentences, prefix=s.text[: m.start()])
        text = _clause(template.format(rest=rest))
        return text if len(_WORD.findall(text)) >= 2 else None
    return None


def _resolve_it(rest: str, s: _Sentence, sentences: list[_Sentence], *, prefix: str) -> str:
    """Turn "ship it on Friday" into "ship the billing page on Friday" when the referent is clear.

    Only "<verb> it" is rewritten, and only from a recent "The <noun phrase> is ..." opener:
    a decision read out of context must still say what it is about.
    """
    m = re.match(r"(?P<verb>\S+)\s+it\b", rest, re.I)
    if not m:
        return rest
    candidates = [_FILLER_LEAD.sub("", prefix)] + [
        sentences[i].text for i in range(s.idx - 1, max(-1, s.idx - 4), -1)
    ]
    for text in candidates:
        ref = _REFERENT.match(_FILLER_LEAD.sub("", text))
        if ref:
            np = ref["np"]
            np = np[:1].lower() + np[1:]
            return f"{m['verb']} {np}{rest[m.end() :]}"
    return rest


# --- action items ---------------------------------------------------------------------


def _lowercase_vocabulary(sentences: list[_Sentence]) -> frozenset[str]:
    """Words seen in lower case mid-sentence: common words, hence not names."""
    vocab: set[str] = set()
    for s in sentences:
        for word in _WORD.findall(s.text)[1:]:
            if word[:1].islower():
                vocab.add(word)
    return frozenset(vocab)


def _is_name(owner: str, lowercase_words: frozenset[str]) -> bool:
    for word in owner.split():
        low = word.lower()
        if low in _NOT_NAMES or low in lowercase_words:
            return False
        if len(low) > 5 and low.endswith(_NOUNISH_SUFFIXES):
            return False
    return True


def _owner_name(candidate: str, lowercase_words: frozenset[str]) -> str | None:
    """The name in a two-capitalised-word match: "Priya Patel", or just "Priya" of "Maybe Priya"."""
    if _is_name(candidate, lowercase_words):
        return candidate
    last = candidate.split()[-1]
    if last != candidate and _is_name(last, lowercase_words):
        return last
    return None


def _task(text: str) -> str | None:
    task = _clause(text)
    words = _WORD.findall(task)
    if len(words) < 2 or words[0].lower() in _NOT_TASK_VERBS:
        return None
    return task


def _action_items(
    sentences: list[_Sentence], lowercase_words: frozenset[str]
) -> tuple[list[tuple[int, ActionItem]], set[int]]:
    """Action items, and the indexes of request questions already turned into one."""
    found: list[tuple[int, ActionItem]] = []
    seen: list[tuple[str, frozenset[str]]] = []
    requests: set[int] = set()
    accepted: set[int] = set()  # "Sure, I'll do it": already the owner of a request

    def add(idx: int, owner: str | None, task: str | None) -> None:
        if task is None:
            return
        key = _key(task)
        for i, (seen_owner, seen_key) in enumerate(seen):
            if _is_duplicate(key, [seen_key]) and (
                seen_owner == (owner or "").lower() or not seen_owner or owner is None
            ):
                # Same task again: keep the first mention, but learn its owner if now known.
                if owner and not seen_owner:
                    seen[i] = (owner.lower(), seen_key)
                    found[i] = (found[i][0], ActionItem(owner=owner, task=found[i][1].task))
                return
        seen.append(((owner or "").lower(), key))
        found.append((idx, ActionItem(owner=owner, task=task)))

    for s in sentences:
        body = _FILLER_LEAD.sub("", s.text)
        m = _ACTION_ITEM.search(body)
        if m:
            owner, task = m["owner"], m["task"]
            if owner and not _is_name(owner, lowercase_words):
                owner = None
            named = _NAMED_TASK.match(_FILLER_LEAD.sub("", task))
            if owner is None and named and _is_name(named["owner"], lowercase_words):
                owner, task = named["owner"], named["task"]
            elif owner is None and (me := _SELF_WILL.match(_FILLER_LEAD.sub("", task))):
                owner, task = s.speaker, task[me.end() :]
            add(s.idx, owner, _task(task))
            continue
        if s.question or _REQUEST.match(body):
            request = _request(s, body, sentences, lowercase_words)
            if request is not None:
                owner, task, reply = request
                requests.add(s.idx)
                if reply is not None:
                    accepted.add(reply)
                add(s.idx, owner, task)
            continue
        if s.idx in accepted:
            continue
        owners = [
            (name, m)
            for m in _OWNER_WILL.finditer(body)
            if (name := _owner_name(m["owner"], lowercase_words)) is not None
        ]
        # "Priya will do X and Marcus will do Y": each task ends where the next owner starts.
        for i, (name, m) in enumerate(owners):
            end = owners[i + 1][1].start() if i + 1 < len(owners) else len(body)
            task = re.sub(r"(?:,?\s*(?:and|then))?\s*$", "", body[m.end() : end], flags=re.I)
            add(s.idx, name, _task(task))
        if owners:
            continue
        me = _SELF_WILL.search(body)
        if me:
            add(s.idx, s.speaker, _task(body[me.end() :]))
    return found, requests


def _request(
    s: _Sentence, body: str, sentences: list[_Sentence], lowercase_words: frozenset[str]
) -> tuple[str | None, str, int | None] | None:
    """Owner, task and reply index of "Marcus, can you ...?" or "Can you ...?" + "Sure"."""
    m = _REQUEST_NAMED.match(body) or _REQUEST.match(body)
    if not m:
        return None
    owner = m["owner"]
    if owner and not _is_name(owner, lowercase_words):
        owner = None
    task = _task(m["task"].rstrip("?"))
    if task is None:
        return None
    reply = _reply(s, sentences)
    if reply is not None and _NEGATIVE.match(reply.text):
        return None
    agreed = reply is not None and _AFFIRMATIVE.match(reply.text) is not None
    reply_idx = reply.idx if reply is not None and agreed else None
    if owner:
        return owner, task, reply_idx
    if reply is not None and agreed:
        return reply.speaker, task, reply_idx
    return None


# --- questions and answers ------------------------------------------------------------


def _reply(q: _Sentence, sentences: list[_Sentence]) -> _Sentence | None:
    """The first sentence of the next turn by someone else (speakers unknown: next line)."""
    for i in range(q.idx + 1, len(sentences)):
        s = sentences[i]
        if s.line == q.line:
            continue
        if s.line > q.line + 3:
            return None
        if q.speaker is None or s.speaker is None or s.speaker != q.speaker:
            return s
    return None


def _qa_pairs(sentences: list[_Sentence], *, skip: set[int]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    seen: list[frozenset[str]] = []
    for q in sentences:
        if not q.question or q.idx in skip or q.words < 3 or _TAG_QUESTION.match(q.text):
            continue
        a = _reply(q, sentences)
        if a is None or a.question:
            continue
        answer = _TRAILING_PUNCT.sub("", a.text)
        follow = sentences[a.idx + 1] if a.idx + 1 < len(sentences) else None
        # A bare "Yes." says little; the speaker's next sentence usually carries the content.
        if a.words <= 2 and follow is not None and follow.line == a.line and not follow.question:
            answer = f"{_ensure_period(a.text)} {_TRAILING_PUNCT.sub('', follow.text)}"
        question = q.text if q.text.endswith("?") else _TRAILING_PUNCT.sub("", q.text) + "?"
        key = _key(question)
        if _is_duplicate(key, seen):
            continue
        seen.append(key)
        found.append((q.idx, f"Q: {question} A: {answer}"))
    return found
