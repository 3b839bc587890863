"""Serving the registry's champion: MLServer with the MLflow runtime (serving/runtime.py, in the
serving environment of serving/bootstrap.sh), started by `python -m pipelines serve`
(serving/commands.py, in the pipeline's environment), and a KServe InferenceService rendered from
the registry (serving/kserve.py). Nothing here is imported at package import time."""
