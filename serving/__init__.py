"""Serving the registry's champion: MLServer with the MLflow runtime (serving/runtime.py, in the
serving environment of serving/bootstrap.sh), started by `python -m pipelines serve`
(serving/commands.py, in the pipeline's environment), and a KServe InferenceService rendered from
the registry (components/kserve_deployer/inference_service.py). Nothing here is imported at package import time."""
