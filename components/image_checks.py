"""What ImageValidator writes and the stages after it read (DataGate, the data review, the registry's
pusher and ChampionResolver), named once.

`image_statistics` (an ExampleStatistics artifact), per split a folder `Split-<split>/`:
  FeatureStats.pb    TFDV statistics of each image's centre of mass and bounding box
  image_moments.npz  count, per-pixel mean and variance (28x28) of the split's images
  image_hashes.npz   every image's fingerprints (components/image_hashes.py): ids, labels,
                     exact, average, thumbnails
The pinned baseline in the repository (schema/image_baseline/Split-train/) holds the same two as
text, which ImageValidator turns back into these files before it compares:
  FeatureStats.pbtxt  the statistics in protobuf text format
  image_moments.json  the moments as {name: {"dtype", "shape", "values"}}
The registry keeps a version's `Split-train/` folder (its training images) as the version's
`baseline/images/Split-train/`; ChampionResolver copies it into the champion's statistics artifact
as `<statistics uri>/images/Split-train/`, where a later run finds it (CHAMPION_IMAGES_DIR).

`image_checks` (an ExampleAnomalies artifact):
  image_checks.json  the results: every contamination check and drift measure, what could not run
                     and why, and `problems`, one line each, which DataGate raises
  review_images.npz  the pictures the data review shows: sample duplicate pairs, mean images
  SplitPair-<split>_train/SchemaDiff.pb  DistributionValidator's anomalies (the TFDV comparators)
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
from tfx import types

from components import image_hashes

FEATURE_STATS_FILE = "FeatureStats.pb"
MOMENTS_FILE = "image_moments.npz"
HASHES_FILE = "image_hashes.npz"
FEATURE_STATS_TEXT_FILE = "FeatureStats.pbtxt"  # the pinned baseline's text forms
MOMENTS_TEXT_FILE = "image_moments.json"
BASELINE_SPLIT = "train"  # the split a version's baseline is made of: what its model trained on
CHAMPION_IMAGES_DIR = "images"  # inside the champion's statistics artifact (ChampionResolver)

CHECKS_FILE = "image_checks.json"
REVIEW_IMAGES_FILE = "review_images.npz"
CHECKS_URI = "image_checks_uri"  # custom property of the image_checks artifact: where CHECKS_FILE is


def split_folder(statistics_uri: str, split: str) -> str:
    return os.path.join(statistics_uri, f"Split-{split}")


def champion_images(champion_statistics_uri: str) -> str:
    """Where the champion's image baseline is inside its statistics artifact."""
    return os.path.join(champion_statistics_uri, CHAMPION_IMAGES_DIR)


def write_results(folder: str, results: dict[str, Any], pictures: dict[str, np.ndarray]) -> None:
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(os.path.join(folder, CHECKS_FILE), "w") as f:
        f.write(json.dumps(results, indent=2, sort_keys=True))
    image_hashes.save_arrays(os.path.join(folder, REVIEW_IMAGES_FILE), pictures)


def read_results(artifact: types.Artifact) -> dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(artifact.uri, CHECKS_FILE)) as f:
        return json.load(f)


def read_pictures(artifact: types.Artifact) -> dict[str, np.ndarray]:
    path = os.path.join(artifact.uri, REVIEW_IMAGES_FILE)
    return image_hashes.load(path) if tf.io.gfile.exists(path) else {}


def problems(results: dict[str, Any]) -> list[str]:
    """The lines DataGate stops the run with (empty: every image check passed)."""
    return list(results.get("problems", []))
