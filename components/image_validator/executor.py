"""ImageValidator's executor: one Beam pass over the images (transforms.py), then the verdict
(checks.py, drift.py). It never fails on bad data itself: it writes what it found, and DataGate
stops the run on its `problems`, after the data review has shown them."""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components import champion, image_checks
from components import examples as examples_lib
from components import image_hashes as ih
from components.image_validator import checks, drift, transforms

EXAMPLES = "examples"
CHAMPION_STATISTICS = "champion_statistics"  # ChampionResolver's (through SameChampion), optional
IMAGE_STATISTICS = "image_statistics"
IMAGE_CHECKS = "image_checks"
BASELINE = "image_baseline"  # the pinned image baseline folder ("" = no image drift check)
BASELINE_FROM_CHAMPION = "baseline_from_champion"
CENTRE_JS = "centre_js"
BOX_LINF = "box_linf"
MEAN_IMAGE = "mean_image_excess"
MAX_SHARE = "contamination_max_share"
SIMILARITY = "duplicate_similarity"
HAMMING = "duplicate_hamming"
TEST_SPLIT = "test"
WORK_DIR = "work"  # inside the image_checks artifact, removed at the end
PINNED_DIR = "pinned_baseline"  # the pinned baseline's text made binary, beside WORK_DIR, removed after use


def split_counts(image_statistics: str, splits: list[str]) -> dict[str, int]:
    return {split: int(drift.load_moments(image_statistics, split)["count"]) for split in splits}


def drift_results(current: types.Artifact, output: types.Artifact, baseline: drift.ImageBaseline,
                  thresholds: drift.Thresholds, splits: list[str]) -> tuple[dict[str, Any], list[str], dict]:
    """(the drift section of the results, its problem lines, the mean images for the review)."""
    section: dict[str, Any] = {"baseline": baseline.path, "baseline_source": baseline.source, "ran": False,
                               "why_not": "", "thresholds": {"centre_js": thresholds.centre_js,
                                                             "box_linf": thresholds.box_linf,
                                                             "mean_image": thresholds.mean_image}, "measures": []}
    compared = [s for s in drift.DRIFT_SPLITS if s in splits]
    means = {f"mean.{s}": drift.load_moments(current.uri, s)["mean"] for s in compared}
    if not baseline.path:
        section["why_not"] = baseline.source
        logging.warning("ImageValidator: %s", baseline.source)
        return section, [], means
    binary = os.path.join(output.uri, PINNED_DIR)
    try:
        path = drift.materialise(baseline.path, binary)
        found = drift.run_distribution_validator(current, drift.baseline_artifact(path), output, compared,
                                                 thresholds)
        base_moments = drift.load_moments(path, image_checks.BASELINE_SPLIT)
    except (drift.BaselineMissing, tf.errors.NotFoundError) as e:
        section["why_not"] = str(e)
        return section, [f"[image drift] could not run against {baseline.source}: {e} (image_baseline none turns "
                         "the check off)"], means
    finally:
        if tf.io.gfile.exists(binary):
            tf.io.gfile.rmtree(binary)
    means["mean.baseline"] = base_moments["mean"]
    for split in compared:
        section["measures"] += drift.measures_of(split, found[split])
        section["measures"].append(drift.mean_image_measure(split, drift.load_moments(current.uri, split),
                                                            base_moments, thresholds.mean_image))
    section["ran"] = True
    return section, drift.problem_lines(section["measures"], baseline.source), means


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES])
        image_statistics = artifact_utils.get_single_instance(output_dict[IMAGE_STATISTICS])
        output = artifact_utils.get_single_instance(output_dict[IMAGE_CHECKS])
        champion_statistics = (input_dict.get(CHAMPION_STATISTICS) or [None])[0]
        settings = {"max_share": float(exec_properties[MAX_SHARE]), "similarity": float(exec_properties[SIMILARITY]),
                    "hamming": int(exec_properties[HAMMING])}
        thresholds = drift.Thresholds(float(exec_properties[CENTRE_JS]), float(exec_properties[BOX_LINF]),
                                      float(exec_properties[MEAN_IMAGE]))
        baseline = drift.resolve(exec_properties.get(BASELINE) or "", bool(exec_properties.get(BASELINE_FROM_CHAMPION)),
                                 champion_statistics)
        logging.info("ImageValidator: image baseline %s (%s)", baseline.path or "none", baseline.source)
        splits = artifact_utils.decode_split_names(examples.split_names)
        files = {split: transforms.split_files(examples_lib.split_pattern(examples, split)) for split in splits}

        work = os.path.join(output.uri, WORK_DIR)
        with self._make_beam_pipeline() as pipeline:
            transforms.build(pipeline, files, image_statistics.uri, work, test_split=TEST_SPLIT,
                             champion_fingerprints=baseline.champion_fingerprints, similarity=settings["similarity"],
                             hamming=settings["hamming"])
        image_statistics.split_names = artifact_utils.encode_split_names(splits)
        matches = ih.load(os.path.join(work, transforms.MATCHES_FILE))
        tf.io.gfile.rmtree(work)

        counts = split_counts(image_statistics.uri, splits)
        found = [checks.within_run_check(matches, counts, TEST_SPLIT),
                 checks.champion_check(matches, counts, TEST_SPLIT,
                                       ih.count(baseline.champion_fingerprints) if baseline.champion_fingerprints
                                       else None,
                                       _champion_words(champion_statistics), baseline.why_no_champion)]
        problems = checks.contamination_problems(found, TEST_SPLIT, settings["max_share"])
        drift_section, drift_problems, means = drift_results(image_statistics, output, baseline, thresholds, splits)
        pictures = {**checks.pair_pictures(found), **means}
        results = checks.results(checks=found, drift=drift_section, problems=problems + drift_problems, counts=counts,
                                 settings=settings, image_statistics=image_statistics.uri)
        image_checks.write_results(output.uri, results, pictures)
        output.set_string_custom_property(image_checks.CHECKS_URI, os.path.join(output.uri, image_checks.CHECKS_FILE))
        output.set_int_custom_property("problems", len(results["problems"]))
        for c in found:
            found_words = f"{c.contaminated} of {c.test_images} ({c.exact} exact)" if c.ran else \
                f"could not run: {c.why_not}"
            logging.info("ImageValidator: contamination vs %s: %s", c.against, found_words)
        for line in results["problems"]:
            logging.warning("ImageValidator: %s", line)


def _champion_words(champion_statistics: types.Artifact | None) -> str:
    if champion_statistics is not None and champion.is_present(champion_statistics):
        return f"the training images of champion {champion.describe(champion_statistics)}"
    return "the champion's training images"

