"""The image gates on real MNIST (bench/README.md, "Gates"), in one invocation:

    PYTHONPATH=. python -m bench.gates [--source DIR] [--seeds 0 1 2 3 4] [--json out.json]
        [--baseline-out schema/image_baseline]

1. cost: the data phase on full MNIST (70,000 records) with the pipeline's own executors and the
   DirectRunner in_memory, before (MnistExampleGen, StatisticsGen, ExampleValidator,
   DriftValidator) and after ImageValidator joined it (ImageValidator without a champion, then with
   one whose training images are MNIST's train split, and DriftValidator rendering the image
   checks); and each check's share, timed on the same arrays with the same helpers;
2. the natural duplicate rate: how many of the 10,000 test images are copies of one of the 60,000
   training images, at the default similarity and below it; and how many copies the check finds
   (exact, re-encoded, noised, brighter, moved by a pixel);
3. image drift: the false positives on real MNIST (re-split with each seed, the canonical test
   split, the subsets the tests use) and what shifted, scaled and rotated digits measure.

`--baseline-out` also writes the pinned image baseline (the train split's image statistics
without fingerprints) from the run of part 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_artifacts

from bench import ingest
from components import champion, image_checks
from components import image_hashes as ih
from components.drift_validator import executor as drift_executor
from components.image_validator import contamination, drift, geometry
from components.image_validator import executor as image_executor
from components.mnist_example_gen import idx, sources
from pipelines.config import PipelineConfig, load_config
from pipelines.local_runner import local_beam_args

SIMILARITIES = (0.99, 0.995, 0.997)


def _artifact(cls, uri: Path, splits: list[str] | None = None):
    artifact = cls()
    artifact.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    if splits is not None:
        artifact.split_names = artifact_utils.encode_split_names(splits)
    return artifact


def image_settings(cfg: PipelineConfig) -> dict:
    return {image_executor.BASELINE: cfg.resolved_image_baseline(), image_executor.BASELINE_FROM_CHAMPION: 1,
            image_executor.CENTRE_JS: cfg.image_centre_js, image_executor.BOX_LINF: cfg.image_box_linf,
            image_executor.MEAN_IMAGE: cfg.image_mean_excess, image_executor.MAX_SHARE: cfg.contamination_max_share,
            image_executor.SIMILARITY: cfg.duplicate_similarity, image_executor.HAMMING: cfg.duplicate_hamming}


def run_image_validator(cfg: PipelineConfig, examples, out: Path, champion_statistics=None):
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=local_beam_args(cfg),
                                                          tmp_dir=str(out / "tmp"))
    statistics = _artifact(standard_artifacts.ExampleStatistics, out / "image_statistics")
    checks = _artifact(standard_artifacts.ExampleAnomalies, out / "image_checks")
    inputs = {image_executor.EXAMPLES: [examples]}
    if champion_statistics is not None:
        inputs[image_executor.CHAMPION_STATISTICS] = [champion_statistics]
    start = time.perf_counter()
    image_executor.Executor(context).Do(inputs, {image_executor.IMAGE_STATISTICS: [statistics],
                                                 image_executor.IMAGE_CHECKS: [checks]}, image_settings(cfg))
    return time.perf_counter() - start, statistics, checks


def champion_of(image_statistics: Path, out: Path):
    """ChampionResolver's statistics artifact of a champion trained on `image_statistics`' train split."""
    artifact = _artifact(standard_artifacts.ExampleStatistics, out, [])
    shutil.copytree(image_checks.split_folder(str(image_statistics), "train"),
                    image_checks.split_folder(image_checks.champion_images(str(out)), "train"))
    champion.set_properties(artifact, {champion.PRESENT: True, champion.VERSION: "1",
                                       champion.REGISTERED_MODEL: "mnist-digits"})
    return artifact


def data_phase(cfg: PipelineConfig, work: Path) -> dict:
    """Part 1: every stage's seconds, ImageValidator's results, and the image statistics it wrote."""
    seconds, statistics_dir = ingest.run_once(cfg, cfg.beam_direct_running_mode, cfg.beam_direct_workers, work)
    examples = _artifact(standard_artifacts.Examples, work / "examples")
    examples.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    seconds["image checks (ImageValidator)"], image_statistics, checks = run_image_validator(
        cfg, examples, work / "image")
    seconds["image checks with a champion (ImageValidator)"], _, with_champion = run_image_validator(
        cfg, examples, work / "image-champion", champion_of(Path(image_statistics.uri), work / "champion"))
    start = time.perf_counter()
    stats = _artifact(standard_artifacts.ExampleStatistics, statistics_dir, ["train", "eval", "test"])
    schema = _artifact(standard_artifacts.Schema, work / "schema")
    drift_executor.Executor().Do(
        {drift_executor.STATISTICS: [stats], drift_executor.SCHEMA: [schema],
         drift_executor.ANOMALIES: [_artifact(standard_artifacts.ExampleAnomalies, work / "anomalies",
                                              ["train", "eval", "test"])],
         drift_executor.IMAGE_CHECKS: [with_champion]},
        {drift_executor.DRIFT_ANOMALIES: [_artifact(standard_artifacts.ExampleAnomalies, work / "drift-images")]},
        {drift_executor.BASELINE: cfg.resolved_baseline_statistics(), drift_executor.LABEL_LINF: cfg.drift_label_linf,
         drift_executor.PIXEL_JS: cfg.drift_pixel_js})
    seconds["drift/skew validation + review with the image checks (DriftValidator)"] = time.perf_counter() - start
    return {"seconds": seconds, "results": image_checks.read_results(checks),
            "results_with_champion": image_checks.read_results(with_champion), "image_statistics": image_statistics.uri}


def mnist(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    found = {}
    for part in ("train", "t10k"):
        images = idx.read_header(str(cache / f"{part}-images-idx3-ubyte"), "images")
        labels = idx.read_header(str(cache / f"{part}-labels-idx1-ubyte"), "labels")
        found[part] = (idx.read_records(images, 0, images.count), idx.read_records(labels, 0, labels.count))
    return found


def is_eval(count: int, ratio: float) -> np.ndarray:
    """MnistExampleGen's stable hold-out of the training file."""
    return np.array([zlib.crc32(b"mnist-train-%d" % i) % 10_000 < ratio * 10_000 for i in range(count)])


def join(test: np.ndarray, references: np.ndarray, similarity: float, hamming: int) -> contamination.CheckResult:
    probes, refs = defaultdict(list), defaultdict(list)
    for part, arrays in contamination.split_probes(contamination.probes(test, np.arange(len(test)),
                                                                        np.zeros(len(test), int), hamming)):
        probes[part].append(arrays)
    for part, arrays in contamination.split_references(
            ih.fingerprints(references, np.zeros(len(references), int), np.arange(len(references))), "train"):
        refs[part].append(arrays)
    matches = contamination.concatenate([contamination.join_partition(probes[p], refs[p], similarity) for p in probes])
    return contamination.summarize(matches, ("train",), "x", "train", len(test), len(references))


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out.append(np.array(Image.open(buffer)))
    return np.stack(out)


def duplicates(data: dict, cfg: PipelineConfig) -> dict:
    """Part 2: natural duplicates of the test images among the training images, and copies found."""
    test, train = data["t10k"][0], data["train"][0]
    natural = {}
    for similarity in SIMILARITIES:
        found = join(test, train, similarity, cfg.duplicate_hamming)
        natural[str(similarity)] = {"test images": found.contaminated, "exact": found.exact,
                                    "closest pairs": [round(p["similarity"], 4) for p in found.pairs]}
    sample, rng = test[:1000], np.random.default_rng(0)
    copies = {"exact": sample, "JPEG quality 90": _jpeg(sample, 90), "JPEG quality 75": _jpeg(sample, 75),
              "brightness x0.8": (sample * 0.8).astype(np.uint8),
              "noise sd 5": np.clip(sample + rng.normal(0, 5, sample.shape), 0, 255).astype(np.uint8),
              "noise sd 8": np.clip(sample + rng.normal(0, 8, sample.shape), 0, 255).astype(np.uint8),
              "moved 1 pixel": ih.shifted(sample, 0, 1), "moved 1 pixel diagonally": ih.shifted(sample, 1, -1),
              "moved 2 pixels": ih.shifted(sample, 0, 2)}
    found = {}
    for name, copy in copies.items():
        found[name] = {str(h): join(sample, np.concatenate([train[:20_000], copy]), cfg.duplicate_similarity,
                                    h).contaminated / len(sample) for h in (0, 1)}
    timing = {}
    start = time.process_time()
    join(test, train, cfg.duplicate_similarity, cfg.duplicate_hamming)
    timing["fingerprints, probes and join, 10,000 test x 60,000 training images (CPU s)"] = time.process_time() - start
    start = time.process_time()
    geometry.summarize(np.concatenate([train, test]))
    timing["image summaries of 70,000 images (CPU s)"] = time.process_time() - start
    return {"natural": natural, "found share of 1,000 copies": found, "timing": timing}


def _statistics(root: Path, name: str, split: str, images: np.ndarray):
    folder = root / name
    summary = geometry.summarize(images)
    target = Path(image_checks.split_folder(str(folder), split))
    target.mkdir(parents=True)
    (target / image_checks.FEATURE_STATS_FILE).write_bytes(geometry.to_statistics(split, summary).SerializeToString())
    ih.save_arrays(str(target / image_checks.MOMENTS_FILE), geometry.moments(summary))
    return _artifact(standard_artifacts.ExampleStatistics, folder, [split])


def measures(root: Path, baseline: str, name: str, images: np.ndarray, thresholds: drift.Thresholds) -> dict:
    current = _statistics(root, name, "test", images)
    output = _artifact(standard_artifacts.ExampleAnomalies, root / f"{name}-anomalies")
    found = drift.run_distribution_validator(current, drift.baseline_artifact(baseline), output, ["test"], thresholds)
    rows = drift.measures_of("test", found["test"]) + [drift.mean_image_measure(
        "test", drift.load_moments(current.uri, "test"), drift.load_moments(baseline, "train"), thresholds.mean_image)]
    over = sorted(m["feature"] for m in rows if m["over"])
    return {m["feature"]: round(m["value"], 4) for m in rows} | {"over": over}


def _shifted(x, dy, dx):
    return np.stack([ndimage.shift(i, (dy, dx), order=0) for i in x])


def _rotated(x, degrees):
    return np.stack([ndimage.rotate(i, degrees, reshape=False, order=1) for i in x]).astype(np.uint8)


def _scaled(x, factor):
    c = 13.5
    return np.stack([np.clip(ndimage.affine_transform(i.astype(float), np.eye(2) / factor, offset=c - c / factor,
                                                      order=1), 0, 255) for i in x]).astype(np.uint8)


def image_drift(data: dict, cfg: PipelineConfig, seeds: list[int], root: Path) -> dict:
    """Part 3: real MNIST against the pinned baseline (false positives), and moved digits against it."""
    thresholds = drift.Thresholds(cfg.image_centre_js, cfg.image_box_linf, cfg.image_mean_excess)
    baseline = cfg.resolved_image_baseline()
    (train, _), (test, _) = data["train"], data["t10k"]
    real = {"canonical test split": test, "test records 0-999": test[:1000], "test records 0-799": test[:800],
            "test records 9000-9999": test[9000:], "test records 0-199": test[:200],
            "train split of records 0-2499 (eval 0.2)": train[:2500][~is_eval(2500, 0.2)],
            "train split of records 0-599 (eval 0.2)": train[:600][~is_eval(600, 0.2)]}
    everything, held_out = np.concatenate([train, test]), is_eval(60_000, cfg.eval_ratio)
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(everything))
        real[f"re-split seed {seed}: train split"] = everything[order[:60_000]][~held_out]
        real[f"re-split seed {seed}: test split"] = everything[order[60_000:]]
    moved = {"moved 1 pixel down": lambda x: _shifted(x, 1, 0), "moved 2 pixels right": lambda x: _shifted(x, 0, 2),
             "moved 2 pixels down-right": lambda x: _shifted(x, 2, 2),
             "moved 3 pixels left": lambda x: _shifted(x, 0, -3),
             "scaled 0.8": lambda x: _scaled(x, 0.8), "scaled 0.9": lambda x: _scaled(x, 0.9),
             "scaled 1.1": lambda x: _scaled(x, 1.1), "scaled 1.2": lambda x: _scaled(x, 1.2),
             "rotated 10 degrees": lambda x: _rotated(x, 10), "rotated -10 degrees": lambda x: _rotated(x, -10),
             "rotated 15 degrees": lambda x: _rotated(x, 15), "rotated 20 degrees": lambda x: _rotated(x, 20)}
    result = {"real": {name: measures(root, baseline, f"real-{k}", images, thresholds)
                       for k, (name, images) in enumerate(real.items())}, "changed": {}}
    for k, (name, change) in enumerate(moved.items()):
        for subset, images in (("test records 0-999", test[:1000]), ("canonical test split", test)):
            result["changed"][f"{name}, {subset}"] = measures(root, baseline, f"changed-{k}-{len(images)}",
                                                              change(images), thresholds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=os.environ.get("MNIST_SOURCE", ""))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--baseline-out", default="")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    cfg = load_config(source=args.source)
    report: dict = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                               f"load average at start {os.getloadavg()[0]:.1f}"}
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        report["data phase"] = data_phase(cfg, Path(tmp) / "phase")
        if args.baseline_out:
            print("baseline:", drift.write_pinned_baseline(report["data phase"]["image_statistics"], args.baseline_out))
        cache = Path(tmp) / "cache"
        sources.resolve_mnist(cfg.source, str(cache))
        data = mnist(cache)
        report["duplicates"] = duplicates(data, cfg)
        report["image drift"] = image_drift(data, cfg, args.seeds, Path(tmp) / "drift")
    report["load average at end"] = round(os.getloadavg()[0], 1)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
