"""Reading an Examples artifact (MnistExampleGen's GZIP TFRecords) back as arrays: for the stages
that look at the images themselves (the evaluator's latency sample, the data review's samples) and
for the tests. The parsing is the trainers' (trainers/common.py), so every reader sees the same
pixels and labels."""

from __future__ import annotations

import json
import os

import numpy as np
from tfx import types
from tfx.types import artifact_utils

from trainers import common
from trainers.model_format import NUM_CLASSES


def split_pattern(examples: types.Artifact, split: str) -> str:
    return os.path.join(artifact_utils.get_split_uri([examples], split), "*")


def load_split(examples: types.Artifact, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split, in file order; the first `limit` examples if given."""
    ds = common.make_dataset([split_pattern(examples, split)], 1024, shuffle=False, seed=0, cache=False)
    images, labels, seen = [], [], 0
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
        seen += len(y)
        if limit and seen >= limit:
            break
    images_, labels_ = np.concatenate(images), np.concatenate(labels)
    return (images_[:limit], labels_[:limit]) if limit else (images_, labels_)


def class_names(examples: types.Artifact) -> list[str]:
    """The names of the labels (label i is class_names[i]) the ingest recorded; the ten digits for
    artifacts written before it recorded them."""
    recorded = examples.get_string_custom_property("class_names")
    return json.loads(recorded) if recorded else [str(d) for d in range(NUM_CLASSES)]


def split_counts(examples: types.Artifact) -> dict[str, int]:
    return json.loads(examples.get_string_custom_property("split_counts") or "{}")
