"""Test images that are (near) copies of training images: candidates from the perceptual hash,
each confirmed in pixel space before it counts.

Candidates: a test image is looked up under several keys ("probes"): the average hash of the
image itself and of the image moved by one pixel in each of the 8 directions (the hash does not
survive a shift: equal after a one-pixel shift in 4 % of real MNIST digits), and, with
`hamming` 1, every hash one bit away from the unmoved image's (JPEG, noise: 92-99 % within one
bit). A reference image whose hash equals a probe's key is a candidate.

Confirmation: 28x28 digits collide often (on real MNIST, 222,000 (test, train) pairs share the
49-bit hash, almost all of them different writings of the same digit), so a candidate counts only
when the 14x14 thumbnails of the (moved) test image and of the reference image have a cosine
similarity of at least `similarity` (0.997: re-encodings, brightness changes and light noise
score above it; of real MNIST's 10,000 test images none has a training image that close, 23 one
at 0.995 or more, 357 at 0.99), or when their exact hashes are equal.

Scale: one Beam GroupByKey over hash partitions, each element a batch's share of one partition
(numpy arrays, not one element per image), so the join's cost is in numpy; inside a partition the
pairs are found by sorting and confirmed in chunks of bounded memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from components import image_hashes as ih

SHIFTS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # SHIFTS[4] is (0, 0)
UNMOVED = SHIFTS.index((0, 0))
PARTITIONS = 16
PAIRS_PER_CHUNK = 100_000
SAMPLE_PAIRS = 4  # exact and near pairs each, per check, for the data review
# The reference sets a test split is compared with.
WITHIN_RUN, CHAMPION = "this_run", "champion"

Arrays = dict[str, np.ndarray]


def partition_of(keys: np.ndarray, partitions: int = PARTITIONS) -> np.ndarray:
    """A hash partition for each 49-bit key (Fibonacci hashing: its low bits are the image's border,
    nearly always dark, so the key itself would fill a few partitions)."""
    with np.errstate(over="ignore"):
        mixed = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return (mixed >> np.uint64(40)).astype(np.int64) % partitions


def probes(images: np.ndarray, ids: np.ndarray, labels: np.ndarray, hamming: int) -> Arrays:
    """Every key a test image is looked up under, with the thumbnail to confirm it with.

    keys/rows: a probe's hash and the row of its thumbnail in `thumbnails`; rows come per shift
    (row = shift * n + image), the flipped-bit probes share the unmoved image's row. `images`: the
    test images themselves, `image`: each row's (for the pictures of the pairs found)."""
    n = len(images)
    moved = [ih.shifted(images, dy, dx) for dy, dx in SHIFTS]
    thumbnails = np.concatenate([ih.thumbnails(m) for m in moved])
    keys = [ih.average_hashes(m) for m in moved]
    rows = [np.arange(n) + k * n for k in range(len(SHIFTS))]
    if hamming >= 1:
        for bit in range(ih.BITS):
            keys.append(keys[UNMOVED] ^ np.uint64(1 << bit))
            rows.append(np.arange(n) + UNMOVED * n)
    if hamming >= 2:
        for a in range(ih.BITS):
            for b in range(a + 1, ih.BITS):
                keys.append(keys[UNMOVED] ^ np.uint64((1 << a) | (1 << b)))
                rows.append(np.arange(n) + UNMOVED * n)
    return {"keys": np.concatenate(keys), "rows": np.concatenate(rows), "thumbnails": thumbnails,
            "images": np.asarray(images, dtype=np.uint8), "image": np.tile(np.arange(n), len(SHIFTS)),
            ih.IDS: np.tile(np.asarray(ids, dtype=np.int64), len(SHIFTS)),
            ih.LABELS: np.tile(np.asarray(labels, dtype=np.int64), len(SHIFTS)),
            ih.EXACT: np.tile(ih.exact_hashes(images), len(SHIFTS)),
            "shift": np.repeat(np.arange(len(SHIFTS)), n)}


def split_probes(found: Arrays, partitions: int = PARTITIONS) -> Iterator[tuple[int, Arrays]]:
    """(partition, that partition's probes with only the thumbnails and images they need, re-indexed)."""
    part = partition_of(found["keys"], partitions)
    for p in np.unique(part):
        keep = part == p
        rows, local = np.unique(found["rows"][keep], return_inverse=True)
        images, image = np.unique(found["image"][rows], return_inverse=True)
        yield int(p), {"keys": found["keys"][keep], "rows": local, "thumbnails": found["thumbnails"][rows],
                       "images": found["images"][images], "image": image,
                       **{name: found[name][rows] for name in (ih.IDS, ih.LABELS, ih.EXACT, "shift")}}


def split_references(arrays: Arrays, source: str, partitions: int = PARTITIONS) -> Iterator[tuple[int, Arrays]]:
    """(partition, the reference images of `source` whose hash falls in it)."""
    part = partition_of(arrays[ih.AVERAGE], partitions)
    for p in np.unique(part):
        keep = part == p
        yield int(p), {**{name: arrays[name][keep] for name in (ih.IDS, ih.LABELS, ih.EXACT, ih.AVERAGE,
                                                                ih.THUMBNAILS)},
                       "source": np.full(int(keep.sum()), source)}


def _unit(thumbnails: np.ndarray) -> np.ndarray:
    """The thumbnails as unit vectors (a blank one stays zero)."""
    values = thumbnails.astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", values, values))
    values *= (1.0 / np.maximum(norms, 1e-12))[:, None]
    return values


def _coarse(units: np.ndarray) -> np.ndarray:
    """[N, 49]: the unit thumbnails projected orthonormally onto their 2x2 blocks (block sums / 2).
    A projection never lengthens a difference, so |coarse(a) - coarse(b)| > sqrt(2 - 2 * similarity)
    proves cos(a, b) < similarity at a quarter of the cost: most candidates stop there."""
    side = ih.THUMBNAIL_SIDE
    return ih.halved(units.reshape(len(units), side, side)).reshape(len(units), -1) / 2


# An index into another array of the same parts: shifted when the parts are concatenated.
_INDEX_INTO = {"rows": "thumbnails", "image": "images"}


def concatenate(parts: Iterable[Arrays]) -> Arrays | None:
    parts = list(parts)
    if not parts:
        return None
    joined = {name: np.concatenate([p[name] for p in parts]) for name in parts[0] if name not in _INDEX_INTO}
    for index, target in _INDEX_INTO.items():
        if index in parts[0]:
            offsets = np.cumsum([0] + [len(p[target]) for p in parts[:-1]])
            joined[index] = np.concatenate([p[index] + offset for p, offset in zip(parts, offsets, strict=True)])
    return joined


PICTURES = ("test_image", "ref_thumbnail")  # a pair's images: in the review's pictures, not the results file


def empty_matches() -> Arrays:
    return {"test_id": np.zeros(0, np.int64), "test_label": np.zeros(0, np.int64), "shift": np.zeros(0, np.int64),
            "source": np.zeros(0, "<U16"), "ref_id": np.zeros(0, np.int64), "ref_label": np.zeros(0, np.int64),
            "similarity": np.zeros(0, np.float32), "exact": np.zeros(0, bool),
            "ref_thumbnail": np.zeros((0, ih.THUMBNAIL_SIDE ** 2), np.uint8),
            "test_image": np.zeros((0, ih.SIDE, ih.SIDE), np.uint8)}


def join_partition(probe_parts: Iterable[Arrays], reference_parts: Iterable[Arrays], similarity: float) -> Arrays:
    """The confirmed (probe, reference) pairs of one partition: equal hash, and equal exact hash or
    thumbnails at least `similarity` alike."""
    found, refs = concatenate(probe_parts), concatenate(reference_parts)
    if found is None or refs is None:
        return empty_matches()
    order = np.argsort(refs[ih.AVERAGE], kind="stable")
    sorted_keys = refs[ih.AVERAGE][order]
    lo = np.searchsorted(sorted_keys, found["keys"], "left")
    counts = np.searchsorted(sorted_keys, found["keys"], "right") - lo
    probe_units, ref_units = _unit(found["thumbnails"]), _unit(refs[ih.THUMBNAILS])
    probe_coarse, ref_coarse = _coarse(probe_units), _coarse(ref_units)
    reach = np.sqrt(max(2.0 - 2.0 * similarity, 0.0)) + 1e-4  # float32's slack
    kept = [empty_matches()]
    hits = np.flatnonzero(counts)
    pairs_before = np.concatenate([[0], np.cumsum(counts[hits])])
    start = 0
    while start < len(hits):  # chunks of probes whose candidate pairs fit PAIRS_PER_CHUNK
        stop = max(int(np.searchsorted(pairs_before, pairs_before[start] + PAIRS_PER_CHUNK, "right")) - 1, start + 1)
        chunk, start = hits[start:stop], stop
        n = counts[chunk]
        probe = np.repeat(chunk, n)
        ref = order[np.repeat(lo[chunk], n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
        row = found["rows"][probe]
        exact = found[ih.EXACT][row] == refs[ih.EXACT][ref]
        gap = probe_coarse[row] - ref_coarse[ref]
        near = np.einsum("ij,ij->i", gap, gap) <= reach * reach
        row, ref, exact = row[exact | near], ref[exact | near], exact[exact | near]
        alike = np.einsum("ij,ij->i", probe_units[row], ref_units[ref])
        keep = exact | (alike >= similarity)
        row, ref = row[keep], ref[keep]
        kept.append({"test_id": found[ih.IDS][row], "test_label": found[ih.LABELS][row], "shift": found["shift"][row],
                     "source": refs["source"][ref].astype("<U16"), "ref_id": refs[ih.IDS][ref],
                     "ref_label": refs[ih.LABELS][ref], "similarity": alike[keep].astype(np.float32),
                     "exact": exact[keep], "ref_thumbnail": refs[ih.THUMBNAILS][ref],
                     "test_image": found["images"][found["image"][row]]})
    return {name: np.concatenate([k[name] for k in kept]) for name in kept[0]}


@dataclasses.dataclass
class CheckResult:
    """What one contamination check found among `test_images` test images."""
    name: str
    against: str  # in words
    ran: bool
    why_not: str = ""
    test_images: int = 0
    reference_images: int = 0
    contaminated: int = 0  # test images with at least one confirmed match
    exact: int = 0  # of which with an exact copy
    near: int = 0  # the others
    pairs: list[dict] = dataclasses.field(default_factory=list)  # samples for the data review

    @property
    def share(self) -> float:
        return self.contaminated / self.test_images if self.test_images else 0.0

    def as_dict(self) -> dict:
        """For the results file: the pairs without their thumbnails (those go into the pictures)."""
        pairs = [{k: v for k, v in pair.items() if k not in PICTURES} for pair in self.pairs]
        return {**dataclasses.asdict(dataclasses.replace(self, pairs=[])), "pairs": pairs, "share": self.share}


def _of_sources(matches: Arrays, sources: tuple[str, ...]) -> Arrays:
    mine = np.isin(matches["source"], sources)
    return {name: values[mine] for name, values in matches.items()}


def _best_per_test_image(found: Arrays) -> np.ndarray:
    """Indices of each test image's best match: an exact copy first, then the most alike."""
    if not len(found["test_id"]):
        return np.zeros(0, np.int64)
    order = np.lexsort((-found["similarity"], ~found["exact"], found["test_id"]))
    return order[np.r_[True, np.diff(found["test_id"][order]) != 0]]


def _samples(found: Arrays, best: np.ndarray, samples: int) -> list[int]:
    """The best matches of the first test images with an exact copy, then of those with a near one."""
    chosen = []
    for want_exact in (True, False):
        chosen += [int(i) for i in best if found["exact"][i] == want_exact][:samples]
    return chosen


def summarize(matches: Arrays, sources: tuple[str, ...], name: str, against: str, test_images: int,
              reference_images: int, samples: int = SAMPLE_PAIRS) -> CheckResult:
    """Counts per test image (several probes or references may confirm the same one) and a few
    sample pairs."""
    found = _of_sources(matches, sources)
    best = _best_per_test_image(found)
    result = CheckResult(name=name, against=against, ran=True, test_images=test_images,
                         reference_images=reference_images, contaminated=len(best),
                         exact=int(found["exact"][best].sum()))
    result.near = result.contaminated - result.exact
    for i in _samples(found, best, samples):
        result.pairs.append({"test_id": int(found["test_id"][i]), "test_label": int(found["test_label"][i]),
                             "source": str(found["source"][i]), "ref_id": int(found["ref_id"][i]),
                             "ref_label": int(found["ref_label"][i]), "similarity": float(found["similarity"][i]),
                             "shift": list(SHIFTS[int(found["shift"][i])]), "exact": bool(found["exact"][i]),
                             # the pictures of the pair: the test image, the thumbnail it was compared with
                             "test_image": found["test_image"][i], "ref_thumbnail": found["ref_thumbnail"][i]})
    return result
