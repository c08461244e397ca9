"""Okapi BM25 over short documents (transcript lines), for the extractive engine's answers.

Our own forty lines rather than ``bm25s`` or ``rank-bm25``: both pull in NumPy (and
``bm25s`` SciPy) for a formula that, over the few thousand lines of even a long meeting,
costs a millisecond in plain Python. Tokenizing is the caller's (the extractive engine
passes its own, so answers and summaries agree on what a word is).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

#: term-frequency saturation and length normalisation: the usual defaults
K1 = 1.5
B = 0.75


class BM25:
    """An index over ``docs`` (each a list of terms)."""

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float = K1, b: float = B) -> None:
        self.k1 = k1
        self.b = b
        self.freqs = [Counter(doc) for doc in docs]
        self.lengths = [len(doc) for doc in docs]
        count = len(docs)
        self.avg_length = (sum(self.lengths) / count) if count else 0.0
        df: Counter[str] = Counter()
        for freq in self.freqs:
            df.update(freq.keys())
        # The "+1" form (Lucene's) keeps every idf positive: a term in more than half the
        # lines still counts a little instead of counting against a line.
        self.idf = {term: math.log(1.0 + (count - n + 0.5) / (n + 0.5)) for term, n in df.items()}

    def scores(self, query: Sequence[str]) -> list[float]:
        """One score per document; 0 for a document sharing no term with ``query``."""
        terms = [t for t in dict.fromkeys(query) if t in self.idf]
        out: list[float] = []
        for freq, length in zip(self.freqs, self.lengths, strict=True):
            norm = self.k1 * (1.0 - self.b + self.b * length / (self.avg_length or 1.0))
            score = 0.0
            for term in terms:
                tf = freq.get(term, 0)
                if tf:
                    score += self.idf[term] * tf * (self.k1 + 1.0) / (tf + norm)
            out.append(score)
        return out
