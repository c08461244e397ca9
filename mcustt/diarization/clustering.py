"""Grouping window embeddings into speakers, with no speaker count given, and turning
the groups back into turns (NumPy and SciPy, which come with the extra).

Two passes (see :func:`cluster`): average-linkage agglomerative clustering of the
windows on cosine similarity (SciPy's ``linkage``) into small clusters of one voice,
then merging the clusters whose mean voices are more alike than the threshold. The
count of clusters left is the count of speakers. Agglomerative rather than spectral
clustering with an eigengap: on short files (a dozen windows) the eigengap is
unstable, and the threshold is one number an operator can reason about
(``MCUSTT_DIARIZATION_THRESHOLD``). Measured on the synthetic fixtures, any threshold
from 0.75 to 0.82 finds every speaker; mean voices of one speaker are 0.9 alike or
more, of two speakers 0.72 or less.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster, linkage

from mcustt.diarization.channels import FRAME_MS
from mcustt.diarization.embedding import FRAME, Floats, Window

#: longest file clustered window by window; beyond, a sample is (memory is n²)
MAX_CLUSTERED = 1500
#: windows less alike than this are never in one first-pass cluster
WINDOW_THRESHOLD = 0.8
#: a cluster of fewer windows is noise (a cough, a door, a moment of two voices at
#: once), folded into its nearest speaker; on long files, also one of less than
#: MIN_SHARE of the windows (a 10-minute meeting: 6 windows, about 5 s of speech)
MIN_CLUSTER = 2
MIN_SHARE = 0.01
#: a speaker's run this short between another speaker's is absorbed by the other
MIN_RUN_MS = 500
#: a speaker's pauses this short are part of the turn
BRIDGE_MS = 300

Labels = npt.NDArray[np.intp]


def _unit(rows: Floats) -> Floats:
    out: Floats = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-9)
    return out


def _merge(
    unit: Floats, members: list[npt.NDArray[np.intp]], *, threshold: float, at_most: int
) -> list[npt.NDArray[np.intp]]:
    """Merge the two clusters with the most alike mean voices while they are more alike
    than ``threshold``, or while there are more than ``at_most``."""
    members = list(members)
    while len(members) > 1:
        centres = _unit(np.stack([unit[m].mean(axis=0) for m in members]))
        similarity = centres @ centres.T
        np.fill_diagonal(similarity, -np.inf)
        i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        if similarity[i, j] < threshold and len(members) <= at_most:
            break
        members[i] = np.concatenate([members[i], members[j]])
        del members[j]
    return members


def cluster(embeddings: Floats, *, threshold: float, max_speakers: int) -> Labels:
    """A speaker index per embedding row (``0``… in order of first appearance).

    1. average-linkage clustering of the windows, cut where windows stop being alike
       (:data:`WINDOW_THRESHOLD`): many small clusters, each one voice;
    2. the two clusters whose mean voices are most alike merge, while they are more
       alike than ``threshold`` (a mean over many windows is steadier than any window,
       so this is where speakers are told apart);
    3. clusters of fewer than :data:`MIN_CLUSTER` windows (or :data:`MIN_SHARE` of
       them) are folded into the others;
       while more than ``max_speakers`` are left, the most alike merge;
    4. every window goes to its nearest speaker.
    """
    n = len(embeddings)
    if n <= 1:
        return np.zeros(n, dtype=np.intp)
    unit = _unit(embeddings.astype(np.float32))
    sample = np.unique(np.linspace(0, n - 1, min(n, MAX_CLUSTERED)).round().astype(np.intp))
    tree = linkage(unit[sample], method="average", metric="cosine")
    groups = fcluster(tree, t=1.0 - WINDOW_THRESHOLD, criterion="distance")
    members = [sample[groups == g] for g in np.unique(groups)]
    members = _merge(unit, members, threshold=threshold, at_most=len(members))
    smallest = max(MIN_CLUSTER, int(MIN_SHARE * len(sample)))
    members = [m for m in members if len(m) >= smallest] or members
    members = _merge(unit, members, threshold=1.0, at_most=max_speakers)
    centres = _unit(np.stack([unit[m].mean(axis=0) for m in members]))
    # Every window (sampled or not, in a kept cluster or a folded one) goes to the
    # nearest speaker; two rounds of recomputing the centres settle the boundaries.
    for _ in range(2):
        labels = np.argmax(unit @ centres.T, axis=1)
        present = [k for k in range(len(centres)) if (labels == k).any()]
        centres = _unit(np.stack([unit[labels == k].mean(axis=0) for k in present]))
    labels = np.argmax(unit @ centres.T, axis=1)
    _, first = np.unique(labels, return_index=True)
    order = {int(labels[i]): rank for rank, i in enumerate(sorted(first))}
    return np.array([order[int(k)] for k in labels], dtype=np.intp)


def label_frames(
    frames: npt.NDArray[np.bool_], windows: list[Window], labels: Labels
) -> list[tuple[int, int, int]]:
    """Turns (speaker, start ms, end ms): each speech frame takes the speaker of the
    window whose centre is nearest; short runs absorbed, short pauses bridged."""
    speech = np.flatnonzero(frames)
    if len(speech) == 0 or not windows:
        return []
    centres = np.array([(a + b) / 2 for a, b in windows]) / FRAME  # in frames
    order = np.argsort(centres, kind="stable")
    centres, ordered = centres[order], labels[order]
    middle = speech + 0.5
    right = np.clip(np.searchsorted(centres, middle), 0, len(centres) - 1)
    left = np.clip(right - 1, 0, len(centres) - 1)
    nearest = np.where(
        np.abs(centres[left] - middle) <= np.abs(centres[right] - middle), left, right
    )
    who = ordered[nearest]
    runs: list[list[int]] = []  # [speaker, first frame, end frame]
    bridge = BRIDGE_MS // FRAME_MS
    for frame, speaker in zip(speech.tolist(), who.tolist(), strict=True):
        if runs and runs[-1][0] == speaker and frame - runs[-1][2] <= bridge:
            runs[-1][2] = frame + 1
        else:
            runs.append([speaker, frame, frame + 1])
    kept: list[list[int]] = []
    for k, run in enumerate(runs):
        before = kept[-1] if kept else None
        after = runs[k + 1] if k + 1 < len(runs) else None
        short = (run[2] - run[1]) * FRAME_MS < MIN_RUN_MS
        if short and before and after and before[0] == after[0] and run[1] - before[2] <= bridge:
            before[2] = run[2]
            continue
        if before and before[0] == run[0] and run[1] - before[2] <= bridge:
            before[2] = run[2]
        else:
            kept.append(list(run))
    return [(s, a * FRAME_MS, b * FRAME_MS) for s, a, b in kept]
