"""What both trainers share: the TFRecord input pipeline (its feature spec derived from the
schema), the learning-rate schedule, placement helpers, and the model's metadata files.

Both frameworks read the same TFRecords through the same tf.data parsing (whole batches parsed and
decoded at once), so any accuracy difference comes from the model and the training, not the data:
Keras batches with make_dataset every epoch, PyTorch decodes its split once (decode_split) and
batches in torch (torch_model.TensorBatches).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import os
import time
from typing import Any

import tensorflow as tf

from trainers import machine
from trainers.config import (  # noqa: F401  (re-exported for the trainer modules)
    MODEL_NAMES,
    WARMUP_FRACTION,
    TrainConfig,
    class_names_from_custom_config,
    learning_rate_at,
    learning_rates,
    scaled,
)
from trainers.model_format import (  # noqa: F401  (re-exported for the trainer modules)
    HISTORY_FILE,
    IMAGE_SHAPE,
    MODEL_META_FILE,
    PIXEL_MEAN,
    PIXEL_STD,
)

# One line per epoch for whoever follows the run (the pipeline's terminal shows this logger's lines).
progress = logging.getLogger("trainers.progress")


def log_epoch(epoch: int, epochs: int, metrics: dict[str, float], seconds: float) -> None:
    """Epoch `epoch` (1-based) of `epochs` ended: its metrics (loss, accuracy, val_loss, val_accuracy)."""
    shown = " ".join(f"{key} {metrics[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy")
                     if key in metrics)
    progress.info("epoch %d/%d: %s (%.1f s)", epoch, epochs, shown, seconds)


BATCH_RECORDS_PER_SECOND = 4  # enough for a live bar to move; the trainers call log_batches every batch
_last_batch_record = 0.0  # time.monotonic() of the last batch record


def log_batches(done: int, total: int | None, epoch: int, epochs: int) -> None:
    """`done` of the epoch's `total` batches (None: not known) trained, for the terminal's live bar
    (pipelines/terminal.py): a DEBUG record with the counts in its `progress` field.

    DEBUG, so the record is not even made unless the terminal turns the logger's level down to DEBUG
    (only for a live bar): the run's log file, the console of --verbose and Kubeflow's logs never see
    one. At most a few records a second, and always the epoch's last batch."""
    global _last_batch_record
    if not progress.isEnabledFor(logging.DEBUG):
        return
    now = time.monotonic()
    if done != total and now - _last_batch_record < 1 / BATCH_RECORDS_PER_SECOND:
        return
    _last_batch_record = now
    progress.debug("epoch %d/%d: batch %d/%s", epoch, epochs, done, total or "?", extra={"progress": {
        "unit": "batch", "done": done, "total": total, "epoch": epoch, "epochs": epochs}})


def mixed_precision_applies(cfg: TrainConfig, on_cpu: bool) -> bool:
    """bfloat16 compute (float32 weights): on a GPU or TPU when mixed_precision asks for it, on a
    CPU as cpu_bfloat16 decides (machine.cpu_precision); the choice is said in the log."""
    if not on_cpu:
        return cfg.mixed_precision
    precision = machine.cpu_precision(cfg.cpu_bfloat16)
    if cfg.mixed_precision:
        logging.warning("mixed_precision is for a GPU or TPU; on the CPU cpu_bfloat16=%s decides: %s",
                        cfg.cpu_bfloat16, precision)
    else:
        logging.info("training on the CPU in %s (cpu_bfloat16=%s; %s)", precision, cfg.cpu_bfloat16,
                     machine.cpu_description())
    return precision == "bfloat16"


def container_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPU cores this process may use: its affinity, capped by the container's CPU quota (cgroup
    v2 cpu.max or v1 cfs quota), which Kubernetes CPU limits set and affinity does not show."""
    cores = len(os.sched_getaffinity(0))
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(cgroup_root, quota_file)) as f:
                fields = f.read().split()
            if period_file:
                with open(os.path.join(cgroup_root, period_file)) as f:
                    fields.append(f.read().strip())
        except OSError:
            continue
        quota, period = fields[0], fields[1]
        if quota not in ("max", "-1") and int(period) > 0:
            return max(1, min(cores, math.ceil(int(quota) / int(period))))
        return cores
    return cores


def expand_patterns(patterns: list[str]) -> list[str]:
    """The Trainer's train_files/eval_files are glob patterns; the readers need file names."""
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}")
    return files


# The curated schema (pipelines/config.py's default schema_path), for callers that have no Schema
# artifact at hand: tests, benchmarks, the evaluator.
CURATED_SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schema", "schema.pbtxt")
IMAGE_FEATURE, LABEL_FEATURE = "image", "label"


@functools.lru_cache(maxsize=8)
def _schema_feature_spec(schema_path: str) -> tuple[tuple[str, Any], ...]:
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx.utils import io_utils

    schema = io_utils.parse_pbtxt_file(schema_path, schema_pb2.Schema())
    for feature in schema.feature:
        # One value in every record: a scalar. The curated schema states it as presence and
        # value_count (TFDV's form); TFT makes a FixedLenFeature only of a fixed shape, a
        # VarLenFeature (sparse, slower to parse and densify) of anything else.
        if (feature.HasField("value_count") and feature.value_count.min == feature.value_count.max == 1
                and feature.presence.min_fraction == 1.0):
            feature.shape.SetInParent()  # the shape with no dimensions, a scalar (replaces value_count)
    return tuple(schema_utils.schema_as_feature_spec(schema).feature_spec.items())


def feature_spec(schema_path: str | None = None) -> dict[str, Any]:
    """tf.io.parse_example's spec of the Examples' records, derived from the schema at `schema_path`
    (a Trainer's fn_args.schema_path; None: the curated schema/schema.pbtxt) with
    tensorflow_transform's schema_as_feature_spec. A feature the schema requires in every record
    (presence min_fraction 1) with exactly one value (value_count 1..1) is a scalar,
    tf.io.FixedLenFeature([], dtype); other features as TFT derives them."""
    return dict(_schema_feature_spec(schema_path or CURATED_SCHEMA))


def image_and_label_spec(schema_path: str | None = None) -> dict[str, tf.io.FixedLenFeature]:
    """The two features the trainers read, as the schema has them; a clear error unless each is one
    value per record of the right type."""
    spec = feature_spec(schema_path)
    wanted = {IMAGE_FEATURE: tf.string, LABEL_FEATURE: tf.int64}
    for name, dtype in wanted.items():
        found = spec.get(name)
        if not (isinstance(found, tf.io.FixedLenFeature) and tuple(found.shape) == () and found.dtype == dtype):
            raise ValueError(f"schema {schema_path or CURATED_SCHEMA}: the trainers read {name!r} as one {dtype.name} "
                             f"value in every record; the schema gives {found}")
    return {name: spec[name] for name in wanted}


def parse_batch(serialized: tf.Tensor, spec: dict[str, tf.io.FixedLenFeature]) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 images [N, 28, 28] and labels [N] of serialized records (the spec: image_and_label_spec)."""
    features = tf.io.parse_example(serialized, spec)
    images = tf.reshape(tf.io.decode_raw(features[IMAGE_FEATURE], tf.uint8), (-1, *IMAGE_SHAPE))
    return images, features[LABEL_FEATURE]


def count_elements(ds: tf.data.Dataset) -> int:
    """One pass over `ds`, counting its elements (records, or batches of a batched dataset)."""
    return int(ds.reduce(0, lambda n, _: n + 1))


def count_records(file_patterns: list[str]) -> int:
    """Records in these files, from one pass over the raw records (nothing parsed or augmented)."""
    return count_elements(tf.data.TFRecordDataset(expand_patterns(file_patterns), compression_type="GZIP"))


def shard_batches(records: int, batch_size: int, shards: int = 1) -> int:
    """Batches per epoch each of `shards` workers takes, the same for all: data-parallel steps
    synchronise every worker, so one worker's extra batch would leave it waiting for the others
    forever. Shards differ by one record at most: the shortest shard's batches, so that a longer
    shard leaves out at most its one record that ends up alone in a last batch (another record each
    epoch, as the order is reshuffled). With one shard: every record, the last batch partial."""
    return math.ceil((records // shards) / batch_size)


def count_batches(file_patterns: list[str], batch_size: int, shards: int = 1) -> int:
    """Batches per epoch of make_dataset over these files (each worker's, with `shards` workers)."""
    return shard_batches(count_records(file_patterns), batch_size, shards)


def check_partition(parts: list[list[Any]], whole: list[Any]) -> list[str]:
    """What keeps `parts` (e.g. each worker's records) from being a partition of `whole`: records
    in more than one part, records of no part, records that are not in `whole`. Empty: disjoint
    and covering. Compared as multisets, as a split may hold the same record twice."""
    problems = []
    seen: collections.Counter = collections.Counter()
    for index, part in enumerate(parts):
        counts = collections.Counter(part)
        overlap = sum((seen & counts).values())
        if overlap:
            problems.append(f"part {index} shares {overlap} records with the parts before it")
        seen += counts
    expected = collections.Counter(whole)
    if missing := sum((expected - seen).values()):
        problems.append(f"{missing} records of the whole are in no part")
    if extra := sum((seen - expected).values()):
        problems.append(f"{extra} records of the parts are not in the whole")
    return problems


def shift_images(images: tf.Tensor, max_shift: int, seed: tf.Tensor) -> tf.Tensor:
    """Moves each image of the batch by its own random whole-pixel offset in [-max_shift, max_shift]
    along each axis, filling with background (0). Stateless: the same seed gives the same shifts."""
    height, width = IMAGE_SHAPE
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift]])
    offsets = tf.random.stateless_uniform([2, tf.shape(images)[0]], seed=seed, minval=0,
                                          maxval=2 * max_shift + 1, dtype=tf.int32)
    rows = offsets[0][:, None] + tf.range(height)[None, :]
    cols = offsets[1][:, None] + tf.range(width)[None, :]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, cols, axis=2, batch_dims=1)


def records(file_patterns: list[str], shard: tuple[int, int] | None = None, limit: int = 0) -> tf.data.Dataset:
    """The serialized records of these files; shard=(index, count): every count-th record from the
    index-th. Parallel reads keep one deterministic order, the same in every worker, so the shards
    of (0, count) ... (count - 1, count) are disjoint and cover the records. limit > 0: the first
    `limit` records only (not with a shard)."""
    if limit and shard:
        raise ValueError("limit and shard together are not supported")
    if shard and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {shard}: the index must be in 0..count-1")
    ds = tf.data.TFRecordDataset(expand_patterns(file_patterns), compression_type="GZIP",
                                 num_parallel_reads=tf.data.AUTOTUNE)
    if shard:
        ds = ds.shard(shard[1], shard[0])
    return ds.take(limit) if limit else ds


def make_dataset(file_patterns: list[str], batch_size: int, shuffle: bool, seed: int,
                 cache: bool = True, shift: int = 0, shard: tuple[int, int] | None = None,
                 schema_path: str | None = None, limit: int = 0) -> tf.data.Dataset:
    """(images uint8 [B, 28, 28], labels int64 [B]) batches from GZIP TFRecords of tf.Examples,
    parsed as the schema at `schema_path` (default: the curated schema) describes them.

    cache=True keeps the serialized records in memory after the first pass (~50 MB for MNIST's
    training split) and gives the dataset its exact length (Keras then knows the epoch's steps
    instead of running into the end of the data). cache=False streams from the files every pass.
    shift > 0 augments: each image moves by up to `shift` pixels, with new offsets every epoch.
    shard=(index, count): this worker's records only, every count-th from the index-th, taken
    before caching and shuffling (each worker holds and reshuffles its own share); every worker
    then yields shard_batches(...) batches, the same number.
    limit > 0: the first `limit` records only, in file order (a tuning trial's subset: the same
    records for both frameworks).
    """
    spec = image_and_label_spec(schema_path)
    ds = records(file_patterns, shard, limit)
    if cache:
        ds = ds.cache()
        # This pass over the data fills the cache: the first epoch then reads memory, not files.
        ds = ds.apply(tf.data.experimental.assert_cardinality(count_elements(ds)))
    if shuffle:
        ds = ds.shuffle(buffer_size=20_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda batch: parse_batch(batch, spec), num_parallel_calls=tf.data.AUTOTUNE)
    if shard:
        ds = ds.take(shard_batches(count_records(file_patterns), batch_size, shard[1]))
    if shift:
        # One stateless seed per batch from a seeded stream that differs each epoch: reproducible
        # whatever order the parallel map calls run in.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, batch_seed: (shift_images(batch[0], shift, batch_seed), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def decode_split(file_patterns: list[str], shard: tuple[int, int] | None = None, schema_path: str | None = None,
                 limit: int = 0) -> tuple[Any, Any]:
    """All records of these files (this shard's, or the first `limit`), parsed once by make_dataset's
    parse_batch, as numpy arrays: uint8 images [N, 28, 28] and int64 labels [N], in file order. For
    a trainer that batches in its own framework (PyTorch: iterating tf.data from Python every epoch
    cost its training a quarter of its throughput, see bench/README)."""
    import numpy as np

    spec = image_and_label_spec(schema_path)
    ds = records(file_patterns, shard, limit)
    parsed = list(ds.batch(4096).map(lambda batch: parse_batch(batch, spec)).as_numpy_iterator())
    if not parsed:
        raise ValueError(f"no records in {file_patterns}" + (f" for shard {shard}" if shard else ""))
    return np.concatenate([images for images, _ in parsed]), np.concatenate([labels for _, labels in parsed])


def write_json(path: str, payload: dict[str, Any]) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True))
