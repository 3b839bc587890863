"""Scoring every model on the same examples in one Beam pipeline.

Each worker loads every model once (DoFn.setup) through the framework-free loader, and scores
whole batches: one batch of examples is scored by all models in the same element, so the
per-example pairing that McNemar's test needs holds by construction, whatever the runner.

The robustness suite rides in the same pass: the DoFn makes the corrupted copies of the batch it
has just parsed (corruptions.py: deterministic per record, whatever the batching or the order;
each example under `corruptions_per_example` of the corruptions) and every model scores the clean
and the corrupted images in the same call. Nothing is read twice and
no corrupted copy is written out: only each model's predictions on it, a checksum of the corrupted
images and a few examples for the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any, Iterator

import apache_beam as beam
import numpy as np

from components import champion
from components.bakeoff_evaluator import corruptions
from trainers import loader, model_format

# Misclassified images kept (per batch) for the report's grid; the rest are not carried.
_KEEP_MISCLASSIFIED = 16
# Examples of every corruption kept for the report: the records with the smallest keys, so the
# same ones whatever the batching.
KEEP_CORRUPTION_EXAMPLES = 8


@dataclasses.dataclass
class Scores:
    labels: np.ndarray  # [N]
    probs: dict[str, np.ndarray]  # model -> [N, K]
    examples_sha256: str  # order-independent: XOR of each serialized record's sha256
    wrong_images: np.ndarray  # [M, 28, 28] examples some model got wrong
    wrong_labels: np.ndarray  # [M]
    wrong_predictions: dict[str, np.ndarray]  # model -> [M]
    # The robustness suite (corruptions.NAMES order), aligned with `labels`; corruptions.NOT_SCORED where an
    # example was not assigned a corruption.
    corrupted_predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # model -> [C, N]
    corruption_sha256: dict[str, str] = dataclasses.field(default_factory=dict)  # corruption -> checksum
    example_images: np.ndarray | None = None  # [1 + C, K, 28, 28]: clean, then each corruption
    example_labels: np.ndarray | None = None  # [K]
    example_predictions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # model -> [1 + C, K]


def _parse(records: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The records as the trainers read them (one feature spec, from the schema: trainers/common.py)."""
    import tensorflow as tf

    from trainers import common

    images, labels = common.parse_batch(tf.constant(records), common.image_and_label_spec())
    return images.numpy(), labels.numpy()


def xor_digest(records: list[bytes]) -> int:
    value = 0
    for record in records:
        value ^= int.from_bytes(hashlib.sha256(record).digest(), "big")
    return value


def load_model(model_dir: str, verified_as: str | None = None) -> tuple[loader.Predictor, dict]:
    """A candidate's export as it is, or (`verified_as`: who it is, e.g. "mnist-digits version 3")
    the champion's signed files, checked against its manifest right before they are loaded."""
    if verified_as:
        return champion.load_verified(model_dir, verified_as)
    return loader.load_predictor(model_dir)


class ScoreBatch(beam.DoFn):
    def __init__(self, model_dirs: dict[str, str],
                 corruptions_per_example: int = corruptions.DEFAULT_PER_EXAMPLE,
                 verified_as: dict[str, str] | None = None) -> None:
        self._model_dirs = model_dirs
        self._per_example = corruptions_per_example
        self._verified_as = verified_as or {}
        self._predictors: dict[str, loader.Predictor] = {}

    def setup(self) -> None:
        self._predictors = {name: load_model(d, self._verified_as.get(name))[0] for name, d in self._model_dirs.items()}

    def process(self, records: list[bytes]) -> Iterator[dict[str, Any]]:
        images, labels = _parse(records)
        count = len(labels)
        keys = corruptions.record_keys(records)
        assigned = corruptions.assignment(keys, self._per_example)  # [C, count]
        corrupted = corruptions.corrupt(images, keys, assigned=assigned)
        # For the report: a few examples under every corruption (the smallest keys: the same ones
        # whatever the batching).
        examples = np.argsort(keys, kind="stable")[:KEEP_CORRUPTION_EXAMPLES if self._per_example else 0]
        shown = corruptions.corrupt(images[examples], keys[examples])
        # Every model scores the clean batch and its corrupted copies in the same element.
        parts = [images] + [corrupted[c] for c in corruptions.NAMES] + [shown[c] for c in corruptions.NAMES]
        stacked = np.concatenate(parts)
        bounds = np.cumsum([0] + [len(part) for part in parts])
        probs, predicted, example_predictions = {}, {}, {}
        for name, predict in self._predictors.items():
            p = loader.predict_in_batches(predict, stacked)
            answers = p.argmax(axis=1).astype(np.uint8)
            probs[name] = p[:count]
            predicted[name] = np.full((len(corruptions.NAMES), count), corruptions.NOT_SCORED, dtype=np.uint8)
            for c in range(len(corruptions.NAMES)):
                predicted[name][c, assigned[c]] = answers[bounds[1 + c]:bounds[2 + c]]
            example_predictions[name] = np.concatenate(
                [answers[:count][examples][None], answers[bounds[1 + len(corruptions.NAMES)]:].reshape(
                    len(corruptions.NAMES), len(examples))])
        wrong = np.zeros(count, dtype=bool)
        for p in probs.values():
            wrong |= p.argmax(axis=1) != labels
        keep = np.flatnonzero(wrong)[:_KEEP_MISCLASSIFIED]
        yield {"labels": labels, "probs": probs, "digest": xor_digest(records),
               "wrong_images": images[keep], "wrong_labels": labels[keep],
               "wrong_predictions": {name: p[keep].argmax(axis=1) for name, p in probs.items()},
               "corrupted_predictions": predicted,
               "corruption_digests": {c: corruptions.xor_digests(corrupted[c]) for c in corruptions.NAMES},
               "example_keys": keys[examples], "example_labels": labels[examples],
               "example_images": np.stack([images[examples]] + [shown[c] for c in corruptions.NAMES]),
               "example_predictions": example_predictions}


def merge(batches: list[dict[str, Any]], names: list[str]) -> Scores:
    digest = 0
    corruption_digests = dict.fromkeys(corruptions.NAMES, 0)
    for b in batches:
        digest ^= b["digest"]
        for c in corruptions.NAMES:
            corruption_digests[c] ^= b["corruption_digests"][c]
    keys = np.concatenate([b["example_keys"] for b in batches])
    _, first = np.unique(keys, return_index=True)  # sorted by key; duplicated records once
    chosen = first[:KEEP_CORRUPTION_EXAMPLES]
    return Scores(
        labels=np.concatenate([b["labels"] for b in batches]),
        probs={n: np.concatenate([b["probs"][n] for b in batches]) for n in names},
        examples_sha256=f"{digest:064x}",
        wrong_images=np.concatenate([b["wrong_images"] for b in batches]),
        wrong_labels=np.concatenate([b["wrong_labels"] for b in batches]),
        wrong_predictions={n: np.concatenate([b["wrong_predictions"][n] for b in batches]) for n in names},
        corrupted_predictions={n: np.concatenate([b["corrupted_predictions"][n] for b in batches], axis=1)
                               for n in names},
        corruption_sha256={c: f"{d:064x}" for c, d in corruption_digests.items()},
        example_images=np.concatenate([b["example_images"] for b in batches], axis=1)[:, chosen],
        example_labels=np.concatenate([b["example_labels"] for b in batches])[chosen],
        example_predictions={n: np.concatenate([b["example_predictions"][n] for b in batches], axis=1)[:, chosen]
                             for n in names},
    )


def score_all(pipeline: beam.Pipeline, file_pattern: str, model_dirs: dict[str, str],
              out_path: str, corruptions_per_example: int = corruptions.DEFAULT_PER_EXAMPLE,
              verified_as: dict[str, str] | None = None) -> None:
    """Adds the scoring to `pipeline`; the merged Scores land in `out_path` (npz). `verified_as`:
    the models that are loaded only once their signed files are verified (load_model)."""
    names = sorted(model_dirs)
    _ = (pipeline
         | "ReadExamples" >> beam.io.ReadFromTFRecord(
             file_pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
         | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=1024)
         | "Score" >> beam.ParDo(ScoreBatch(model_dirs, corruptions_per_example, verified_as))
         | "Gather" >> beam.combiners.ToList()
         | "Write" >> beam.Map(lambda batches: save(merge(batches, names), out_path)))


def save(scores: Scores, path: str) -> None:
    arrays = {"labels": scores.labels, "wrong_images": scores.wrong_images, "wrong_labels": scores.wrong_labels,
              "examples_sha256": np.array(scores.examples_sha256)}
    arrays.update({f"probs/{n}": p for n, p in scores.probs.items()})
    arrays.update({f"wrong_predictions/{n}": p for n, p in scores.wrong_predictions.items()})
    if scores.corrupted_predictions:
        arrays["corruption_names"] = np.array(list(scores.corruption_sha256))
        arrays["corruption_sha256"] = np.array(list(scores.corruption_sha256.values()))
        arrays["example_images"] = scores.example_images
        arrays["example_labels"] = scores.example_labels
        arrays.update({f"corrupted_predictions/{n}": p for n, p in scores.corrupted_predictions.items()})
        arrays.update({f"example_predictions/{n}": p for n, p in scores.example_predictions.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    model_format.write_bytes(path, buffer.getvalue())  # in a Beam worker; the path may be on an object store


def load(path: str) -> Scores:
    buffer = io.BytesIO(model_format.read_bytes(path))
    with np.load(buffer, allow_pickle=False) as data:
        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(prefix + "/")}

        suite = "corruption_names" in data.files
        return Scores(labels=data["labels"], probs=group("probs"), examples_sha256=str(data["examples_sha256"]),
                      wrong_images=data["wrong_images"], wrong_labels=data["wrong_labels"],
                      wrong_predictions=group("wrong_predictions"),
                      corrupted_predictions=group("corrupted_predictions"),
                      corruption_sha256=(dict(zip(data["corruption_names"].tolist(),
                                                  data["corruption_sha256"].tolist(), strict=True))
                                         if suite else {}),
                      example_images=data["example_images"] if suite else None,
                      example_labels=data["example_labels"] if suite else None,
                      example_predictions=group("example_predictions"))
