"""Serving the registry's champion: MLServer with the project's runtime (serving/runtime.py: the
signed export, verified, loaded with trainers/loader.py; in the serving environment of
serving/bootstrap.sh) behind the project's guard (serving/launch.py), started by `python -m
pipelines serve` (serving/commands.py, in the pipeline's environment); on KServe, the same runtime
in the image of serving/Dockerfile (serving/kserve_runtime.py), named by the InferenceService
rendered from the registry (components/kserve_deployer/inference_service.py). Nothing here is
imported at package import time."""
