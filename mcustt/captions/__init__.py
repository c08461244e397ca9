"""Caption text shaping (issue 17): punctuation restoration and the profanity filter.

:class:`~mcustt.captions.shaper.Shaper` is what the pipeline calls; the rules live in
:mod:`mcustt.captions.punctuation` and :mod:`mcustt.captions.profanity`.
"""

from mcustt.captions.profanity import Filter, mask
from mcustt.captions.shaper import Shaper, filter_summary

__all__ = ["Filter", "Shaper", "filter_summary", "mask"]
