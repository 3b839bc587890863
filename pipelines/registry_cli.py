"""Registry commands: list versions, roll the champion back, predict with the champion.

python -m pipelines.registry_cli list
python -m pipelines.registry_cli rollback VERSION [--reason TEXT]
python -m pipelines.registry_cli predict IMAGE.png | --idx IMAGES-idx3-ubyte[.gz] --index N

The registry is the one `pipelines.cli run` uses: --registry-uri, else MLFLOW_TRACKING_URI,
else the embedded SQLite registry under --output-root.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile

import numpy as np

from components.registry_pusher.registry import CHAMPION_ALIAS, MlflowRegistry, RegistryError
from pipelines.config import load_config


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


def load_idx_record(path: str, index: int) -> np.ndarray:
    from components.mnist_example_gen import idx

    with tempfile.NamedTemporaryFile(suffix="-idx3-ubyte") as raw:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw.write(f.read())
            raw.flush()
            path_to_read = raw.name
        else:
            path_to_read = path
        header = idx.read_header(path_to_read, "images")
        if not 0 <= index < header.count:
            raise ValueError(f"{path}: record {index} is out of range (the file has {header.count})")
        return idx.read_records(header, index, index + 1).copy()


def _list(registry: MlflowRegistry) -> None:
    versions = registry.versions()
    if not versions:
        print(f"{registry.model_name}: no versions in {registry.uri}")
        return
    print(f"{'version':<8} {'alias':<9} {'framework':<10} {'accuracy':<9} {'run':<28} replaced")
    for v in versions:
        alias = CHAMPION_ALIAS if CHAMPION_ALIAS in v.aliases else ""
        print(f"{v.version:<8} {alias:<9} {v.tags.get('framework', ''):<10} {v.tags.get('accuracy', ''):<9} "
              f"{v.tags.get('pipeline_run_id', ''):<28} {v.tags.get('replaced_version', '')}")


def _predict(registry: MlflowRegistry, images: np.ndarray) -> dict:
    """The champion's probabilities for `images`. Only its exported files are downloaded and loaded
    with this installation's `trainers.serving` (SavedModel or TorchScript, checked first): the
    Python code stored with the registered pyfunc is never run."""
    from trainers import serving

    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        found = registry.download_champion(tmp)
        if found is None:
            raise RegistryError(f"{registry.model_name} has no champion in {registry.uri}")
        champion, model_dir = found
        predict, _ = serving.load_predictor(model_dir)
        probs = np.asarray(predict(images))[0]
    return {"digit": int(probs.argmax()), "probability": float(probs.max()),
            "probabilities": [round(float(p), 6) for p in probs],
            "model": registry.champion_uri(), "version": champion.version}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.registry_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of PipelineConfig fields")
    parser.add_argument("--output-root")
    parser.add_argument("--registry-uri")
    parser.add_argument("--model-name", dest="registered_model_name")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with their key metrics; which one is champion")
    rollback = sub.add_parser("rollback", help="move the champion alias back to VERSION")
    rollback.add_argument("version")
    rollback.add_argument("--reason", default="")
    predict = sub.add_parser("predict", help="the champion's digit for a PNG or an IDX record")
    predict.add_argument("png", nargs="?")
    predict.add_argument("--idx", help="an images IDX file (raw or .gz)")
    predict.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)

    cfg = load_config(args.config, output_root=args.output_root, registry_uri=args.registry_uri,
                      registered_model_name=args.registered_model_name)
    try:
        registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
        if args.command == "list":
            _list(registry)
        elif args.command == "rollback":
            v = registry.rollback(args.version, args.reason)
            print(f"{registry.model_name}: {CHAMPION_ALIAS} -> version {v.version} "
                  f"(was {v.tags.get('rolled_back_from') or 'none'})")
        else:
            if bool(args.png) == bool(args.idx):
                parser.error("predict takes a PNG file or --idx FILE, not both")
            if registry.champion() is None:
                raise RegistryError(f"{registry.model_name} has no champion in {registry.uri}")
            images = load_png(args.png) if args.png else load_idx_record(args.idx, args.index)
            print(json.dumps(_predict(registry, images)))
    except (RegistryError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
