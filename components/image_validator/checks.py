"""ImageValidator's verdict from what its Beam pipeline found: the contamination checks' counts and
sample pairs, the drift measures, every problem as one line, and the pictures of the data review."""

from __future__ import annotations

from typing import Any

import numpy as np

from components import image_hashes as ih
from components.image_validator import contamination, transforms
from components.image_validator.contamination import CheckResult

WITHIN_RUN_AGAINST = "this run's train and eval splits"


def within_run_check(matches: dict[str, np.ndarray], counts: dict[str, int], test_split: str) -> CheckResult:
    """Test images that are copies of this run's own training images: always runs."""
    if test_split not in counts:
        return CheckResult(contamination.WITHIN_RUN, WITHIN_RUN_AGAINST, ran=False,
                           why_not=f"the examples have no {test_split} split")
    return contamination.summarize(matches, transforms.WITHIN_RUN_SOURCES, contamination.WITHIN_RUN,
                                   WITHIN_RUN_AGAINST, counts[test_split],
                                   sum(counts.get(s, 0) for s in transforms.WITHIN_RUN_SOURCES))


def champion_check(matches: dict[str, np.ndarray], counts: dict[str, int], test_split: str,
                   champion_images: int | None, against: str, why_not: str) -> CheckResult:
    """Test images that are copies of the champion's training images; says why when it cannot run."""
    if champion_images is None or test_split not in counts:
        return CheckResult(contamination.CHAMPION, against, ran=False,
                           why_not=why_not or f"the examples have no {test_split} split")
    return contamination.summarize(matches, (contamination.CHAMPION,), contamination.CHAMPION, against,
                                   counts[test_split], champion_images)


def contamination_problems(checks: list[CheckResult], test_split: str, max_share: float) -> list[str]:
    """One line per check whose share of duplicated test images is above `max_share`."""
    return [f"[contamination: {test_split}] {c.contaminated} of {c.test_images} {test_split} images ({c.share:.2%}) "
            f"are copies of images in {c.against} ({c.exact} exact, {c.near} near duplicates), above the limit "
            f"{max_share:.2%}" for c in checks if c.ran and c.share > max_share]


def _upsampled(thumbnail: np.ndarray) -> np.ndarray:
    side = ih.THUMBNAIL_SIDE
    return np.kron(np.asarray(thumbnail, dtype=np.uint8).reshape(side, side), np.ones((2, 2), dtype=np.uint8))


def pair_pictures(checks: list[CheckResult]) -> dict[str, np.ndarray]:
    """`<check>.test` and `<check>.reference` [k, 28, 28]: each sample pair's test image and the
    14x14 thumbnail it matched (the pixels the check compared, and all the registry keeps of a
    champion's training image), enlarged. Takes the pictures out of the pairs' records."""
    pictures = {}
    for check in checks:
        tests = [pair.pop("test_image") for pair in check.pairs]
        references = [_upsampled(pair.pop("ref_thumbnail")) for pair in check.pairs]
        if tests:
            pictures[f"{check.name}.test"] = np.stack(tests)
            pictures[f"{check.name}.reference"] = np.stack(references)
    return pictures


def results(*, checks: list[CheckResult], drift: dict[str, Any], problems: list[str], counts: dict[str, int],
            settings: dict[str, Any], image_statistics: str) -> dict[str, Any]:
    """image_checks.json (components/image_checks.py)."""
    return {"problems": problems, "splits": counts, "image_statistics": image_statistics,
            "contamination": {"checks": [c.as_dict() for c in checks],
                              **{k: settings[k] for k in ("max_share", "similarity", "hamming")}},
            "drift": drift}
