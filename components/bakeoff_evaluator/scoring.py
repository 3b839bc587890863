"""Scoring every model on the same examples in one Beam pipeline.

Each worker loads every model once (DoFn.setup) through the framework-free loader, and scores
whole batches: one batch of examples is scored by all models in the same element, so the
per-example pairing that McNemar's test needs holds by construction, whatever the runner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any, Iterator

import apache_beam as beam
import numpy as np

from trainers import serving

# Misclassified images kept (per batch) for the report's grid; the rest are not carried.
_KEEP_MISCLASSIFIED = 16


@dataclasses.dataclass
class Scores:
    labels: np.ndarray  # [N]
    probs: dict[str, np.ndarray]  # model -> [N, 10]
    examples_sha256: str  # order-independent: XOR of each serialized record's sha256
    wrong_images: np.ndarray  # [M, 28, 28] examples some model got wrong
    wrong_labels: np.ndarray  # [M]
    wrong_predictions: dict[str, np.ndarray]  # model -> [M]


def _parse(records: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    features = tf.io.parse_example(tf.constant(records), {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    images = tf.reshape(tf.io.decode_raw(features["image"], tf.uint8), (-1, 28, 28)).numpy()
    return images, features["label"].numpy()


def xor_digest(records: list[bytes]) -> int:
    value = 0
    for record in records:
        value ^= int.from_bytes(hashlib.sha256(record).digest(), "big")
    return value


class ScoreBatch(beam.DoFn):
    def __init__(self, model_dirs: dict[str, str]) -> None:
        self._model_dirs = model_dirs
        self._predictors: dict[str, serving.Predictor] = {}

    def setup(self) -> None:
        self._predictors = {name: serving.load_predictor(d)[0] for name, d in self._model_dirs.items()}

    def process(self, records: list[bytes]) -> Iterator[dict[str, Any]]:
        images, labels = _parse(records)
        probs = {name: predict(images) for name, predict in self._predictors.items()}
        wrong = np.zeros(len(labels), dtype=bool)
        for p in probs.values():
            wrong |= p.argmax(axis=1) != labels
        keep = np.flatnonzero(wrong)[:_KEEP_MISCLASSIFIED]
        yield {"labels": labels, "probs": probs, "digest": xor_digest(records),
               "wrong_images": images[keep], "wrong_labels": labels[keep],
               "wrong_predictions": {n: p[keep].argmax(axis=1) for n, p in probs.items()}}


def merge(batches: list[dict[str, Any]], names: list[str]) -> Scores:
    digest = 0
    for b in batches:
        digest ^= b["digest"]
    return Scores(
        labels=np.concatenate([b["labels"] for b in batches]),
        probs={n: np.concatenate([b["probs"][n] for b in batches]) for n in names},
        examples_sha256=f"{digest:064x}",
        wrong_images=np.concatenate([b["wrong_images"] for b in batches]),
        wrong_labels=np.concatenate([b["wrong_labels"] for b in batches]),
        wrong_predictions={n: np.concatenate([b["wrong_predictions"][n] for b in batches]) for n in names},
    )


def score_all(pipeline: beam.Pipeline, file_pattern: str, model_dirs: dict[str, str],
              out_path: str) -> None:
    """Adds the scoring to `pipeline`; the merged Scores land in `out_path` (npz)."""
    names = sorted(model_dirs)
    _ = (pipeline
         | "ReadExamples" >> beam.io.ReadFromTFRecord(
             file_pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
         | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=1024)
         | "Score" >> beam.ParDo(ScoreBatch(model_dirs))
         | "Gather" >> beam.combiners.ToList()
         | "Write" >> beam.Map(lambda batches: save(merge(batches, names), out_path)))


def save(scores: Scores, path: str) -> None:
    import tensorflow as tf  # gfile: the path may be on gs:// when a remote runner scores

    arrays = {"labels": scores.labels, "wrong_images": scores.wrong_images, "wrong_labels": scores.wrong_labels,
              "examples_sha256": np.array(scores.examples_sha256)}
    arrays.update({f"probs/{n}": p for n, p in scores.probs.items()})
    arrays.update({f"wrong_predictions/{n}": p for n, p in scores.wrong_predictions.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def load(path: str) -> Scores:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        buffer = io.BytesIO(f.read())
    with np.load(buffer, allow_pickle=False) as data:
        probs = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("probs/")}
        wrong = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("wrong_predictions/")}
        return Scores(labels=data["labels"], probs=probs, examples_sha256=str(data["examples_sha256"]),
                      wrong_images=data["wrong_images"], wrong_labels=data["wrong_labels"],
                      wrong_predictions=wrong)
