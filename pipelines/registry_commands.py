"""The registry commands (`python -m pipelines registry list|rollback|reinstate|predict|score`):
list versions, roll the champion back (rejecting the version it leaves), reinstate a rejected
version, predict and score with the champion (its files verified against its signed manifest
first). The registry is the one `run` uses."""

from __future__ import annotations

import gzip
import json
import tempfile

import numpy as np

from components.registry import CHAMPION_ALIAS, NOT_PROMOTED_TAG, MlflowRegistry, RegistryError


def load_png(path: str) -> np.ndarray:
    """A PNG as one MNIST-style image: grayscale, 28x28, white digit on black, uint8 [1, 28, 28]."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path).convert("L")
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    if image.size != (28, 28):
        image = image.resize((28, 28), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)[None]


def load_idx_records(path: str, kind: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Records [start, stop) of an IDX file (raw or .gz) of `kind` images or labels."""
    from components.mnist_example_gen import idx

    with tempfile.NamedTemporaryFile(suffix="-idx-ubyte") as raw:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw.write(f.read())
            raw.flush()
            path_to_read = raw.name
        else:
            path_to_read = path
        header = idx.read_header(path_to_read, kind)
        stop = header.count if stop is None else stop
        if not 0 <= start < stop <= header.count:
            raise ValueError(f"{path}: records {start}..{stop - 1} are out of range (the file has {header.count})")
        return idx.read_records(header, start, stop).copy()


def load_idx_record(path: str, index: int) -> np.ndarray:
    return load_idx_records(path, "images", index, index + 1)


def list_versions(registry: MlflowRegistry) -> None:
    versions = registry.versions()
    if not versions:
        print(f"{registry.model_name}: no versions in {registry.uri}")
        return
    print(f"{'version':<8} {'alias':<9} {'framework':<10} {'accuracy':<9} {'run':<28} {'replaced':<9} state")
    for v in versions:
        alias = CHAMPION_ALIAS if CHAMPION_ALIAS in v.aliases else ""
        state = f"rejected ({v.tags.get('rejected_reason', '')})" if v.rejected else v.tags.get(NOT_PROMOTED_TAG, "")
        print(f"{v.version:<8} {alias:<9} {v.tags.get('framework', ''):<10} {v.tags.get('accuracy', ''):<9} "
              f"{v.tags.get('pipeline_run_id', ''):<28} {v.tags.get('replaced_version', ''):<9} {state}")


def champion_probabilities(registry: MlflowRegistry, images: np.ndarray) -> tuple[np.ndarray, str]:
    """The champion's probabilities for `images`, and its version. Its files are downloaded,
    verified against its signed manifest and loaded with this installation's `trainers.loader`:
    the Python code stored with the registered pyfunc is never run."""
    from trainers import loader

    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        found = registry.download_champion(tmp)
        if found is None:
            raise RegistryError(f"{registry.model_name} has no champion in {registry.uri}")
        predict_fn, _ = loader.load_predictor(found.model_dir)
        return np.asarray(predict_fn(images)), found.version.version


def predict(registry: MlflowRegistry, images: np.ndarray) -> dict:
    probabilities, version = champion_probabilities(registry, images)
    probs = probabilities[0]
    return {"digit": int(probs.argmax()), "probability": float(probs.max()),
            "probabilities": [round(float(p), 6) for p in probs],
            "model": registry.champion_uri(), "version": version}


def score_files(registry: MlflowRegistry, images_path: str, labels_path: str, limit: int = 0) -> dict:
    """The champion's accuracy on an IDX images and labels pair (the first `limit` records), as
    the evaluator records it."""
    images = load_idx_records(images_path, "images", 0, limit or None)
    labels = load_idx_records(labels_path, "labels", 0, limit or None)
    probabilities, version = champion_probabilities(registry, images)
    return {"accuracy": float((probabilities.argmax(1) == labels).mean()), "examples": int(len(labels)),
            "model": registry.champion_uri(), "version": version}


def rollback(registry: MlflowRegistry, version: str, reason: str) -> None:
    v = registry.rollback(version, reason)
    left = v.tags.get("rolled_back_from") or ""
    print(f"{registry.model_name}: {CHAMPION_ALIAS} -> version {v.version} (was {left or 'none'})"
          + (f"; version {left} is rejected: no run promotes it again until `registry reinstate {left}`"
             if left and left != v.version else ""))


def promote(registry: MlflowRegistry, version: str) -> None:
    """A person moves the alias to `version` (under the alias lock; never to a rejected version)."""
    target = registry.version(version)
    rejected = registry.rejection(target)
    if rejected:
        raise RegistryError(f"{registry.model_name} version {target.version} is rejected ({rejected}): reinstate it "
                            f"first (`python -m pipelines registry reinstate {target.version}`)")
    previous = registry.champion()
    registry.promote(target.version)
    print(f"{registry.model_name}: {CHAMPION_ALIAS} -> version {target.version} "
          f"(was {f'version {previous.version}' if previous else 'none'})")


def reject(registry: MlflowRegistry, version: str, reason: str) -> None:
    before = registry.champion()
    v = registry.reject(version, reason)
    print(f"{registry.model_name}: version {v.version} is rejected ({v.tags.get('rejected_reason')})"
          + ("; it was the champion: the alias is off, the next run is judged against no champion"
             if before is not None and before.version == v.version else ""))


def reinstate(registry: MlflowRegistry, version: str) -> None:
    v = registry.reinstate(version)
    champion = registry.champion()
    print(f"{registry.model_name}: version {v.version} is no longer rejected; the alias stays where it is "
          f"({f'version {champion.version}' if champion else 'no champion'}); a later run may promote it")


def predict_file(registry: MlflowRegistry, png: str | None, idx_path: str | None, index: int) -> None:
    """The champion's digit for a PNG file or one record of an IDX images file, as JSON."""
    if bool(png) == bool(idx_path):
        raise ValueError("predict takes a PNG file or --idx FILE, not both")
    if registry.champion() is None:
        raise RegistryError(f"{registry.model_name} has no champion in {registry.uri}")
    images = load_png(png) if png else load_idx_record(idx_path, index)
    print(json.dumps(predict(registry, images)))
