"""The deployed form, here, in one command (`make stack`): the two images built from the repo's
Dockerfiles (if needed), SeaweedFS's S3 endpoint, PostgreSQL, the MLflow server in its image
(PostgreSQL backend, artifacts on the bucket), then every task of the package run in a fresh
container of the pipeline image with `minio://` artifact URIs, as an on-prem Kubeflow runs it;
the summary `make run` prints; then the champion, loaded by alias in another fresh container,
scored on the test file against what the evaluator recorded. Everything it started is stopped
(processes by their group, containers by id), also on failure.

PYTHONPATH=. python -m infra.stack [--subset] [--root DIR] [--mnist DIR] [--package pipeline.yaml]

--subset compiles a package for a small real MNIST subset (one epoch of the seed model) instead
of running the committed pipeline.yaml on full MNIST.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from infra import services
from pipelines import cli
from pipelines.config import REPO_ROOT
from pipelines.kubeflow import launch

SUBSET = {"train_limit": 2500, "eval_ratio": 0.2, "test_limit": 1000, "epochs": 1, "model": "seed_cnn",
          "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "constant", "min_metric": 0.5}
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def built_image(script: str) -> str:
    """The image the build script tags (building it only when its sources changed)."""
    started = time.monotonic()
    done = subprocess.run(["bash", str(REPO_ROOT / script)], stdout=subprocess.PIPE, text=True, check=True)
    image = done.stdout.strip().splitlines()[-1]
    print(f"stack: {image} ready after {time.monotonic() - started:.0f} s", flush=True)
    return image


def subset_package(image: str, root: Path) -> str:
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SUBSET.items()]
    output = root / "pipeline.yaml"
    subprocess.run([sys.executable, "-m", "pipelines", "compile", "--image", image, "--kfp-accelerator", "none",
                    "--output", str(output), *flags], check=True, stdout=subprocess.DEVNULL)
    return str(output)


def champion_accuracy(image: str, registry_uri: str, model_name: str, mnist: str, limit: int,
                      environment: dict[str, str]) -> dict:
    """`models:/NAME@champion` downloaded and scored in a fresh container of the pipeline image."""
    images, labels = (f"{mnist}/{name}" for name in TEST_FILES)
    done = subprocess.run(
        ["docker", "run", "--rm", "--network=host", f"--volume={mnist}:{mnist}:ro",
         *(f"--env={name}" for name in environment), image,
         "python", "-m", "pipelines", "registry", "--registry-uri", registry_uri,
         "--registered-model-name", model_name, "score", images, labels, "--limit", str(limit)],
        check=True, stdout=subprocess.PIPE, text=True, env={**os.environ, **environment})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", action="store_true", help="a small real subset instead of full MNIST")
    parser.add_argument("--root", default=f"/tmp/mnist-stack-{time.strftime('%Y%m%d-%H%M%S')}",
                        help="local scratch: service data and logs, task logs")
    parser.add_argument("--mnist", default=os.environ.get("MNIST_SOURCE") or str(REPO_ROOT.parent / "shared" /
                                                                              "data" / "mnist"))
    parser.add_argument("--package", default=str(REPO_ROOT / "pipeline.yaml"))
    parser.add_argument("--registered-model-name", default="mnist-digits")
    args = parser.parse_args(argv)
    root, mnist = Path(args.root), os.path.abspath(args.mnist)
    root.mkdir(parents=True, exist_ok=True)

    image = built_image("infra/build_image.sh")
    mlflow_image = built_image("infra/mlflow/build_image.sh")
    package = subset_package(image, root) if args.subset else args.package
    with services.seaweedfs(root / "s3") as store, services.postgres(root / "postgres") as database, \
            services.mlflow_server(root / "mlflow", database, f"s3://{store.bucket}/mlflow",
                                   environment=store.environment, image=mlflow_image) as registry_uri:
        run_root = f"minio://{store.bucket}/runs/{time.strftime('%Y%m%d-%H%M%S')}"
        print(f"stack: S3 {store.endpoint} (bucket {store.bucket}), MLflow {registry_uri} on PostgreSQL; "
              f"launching {package} under {run_root}", flush=True)
        started = time.monotonic()
        parameters = {"source": mnist, "registry_uri": registry_uri}
        try:
            outputs = launch.launch_locally(package, run_root, parameters, log=sys.stdout,
                                            container=launch.Container(image, (mnist,)), scratch=root / "scratch",
                                            environment=store.environment)
        except launch.TaskFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        os.environ.update(store.environment)  # this process reads the evaluation back from the bucket
        from components import object_store

        object_store.enable_s3(os.environ)
        summary = launch.launch_summary(outputs, run_root, registry_uri, str(root / "scratch"))
        cli.print_summary(summary, time.monotonic() - started)
        if not summary["registered_version"]:
            return 0
        limit = SUBSET["test_limit"] if args.subset else 0
        scored = champion_accuracy(image, registry_uri, args.registered_model_name, mnist, limit, store.environment)
        recorded = summary["accuracy"][summary["winner"]]
        same = scored["accuracy"] == recorded
        print(f"champion:   {scored['model']} (version {scored['version']}) in a fresh container: accuracy "
              f"{scored['accuracy']:.4f} on {scored['examples']} test images; the evaluator recorded {recorded:.4f}"
              f" ({'the same' if same else 'DIFFERENT'})")
        return 0 if same else 1


if __name__ == "__main__":
    from components.object_store import exit_process

    exit_process(main())
