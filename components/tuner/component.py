"""OptunaTuner: one framework's hyperparameter search, in TFX's Tuner's shape. Like TFX's Tuner it
takes Examples (and a Schema) and emits a HyperParameters artifact (KerasTuner's HyperParameters
config of the best values, which a Trainer given `hyperparameters=` hands its run_fn as
fn_args.hyperparameters) and a TunerResults artifact; unlike it, the search is Optuna's (TPE, a
median or Hyperband pruner) over a trainer's per-epoch trial entry point, so that Keras and PyTorch
are tuned by one engine with one budget rule, by any number of workers sharing the study's storage.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.tuner import executor


class OptunaTunerSpec(ComponentSpec):
    PARAMETERS = {
        executor.FRAMEWORK: ExecutionParameter(type=str),
        # The trainer's trial entry point, tune_trial(cfg, data, on_epoch) (trainers/trial.py).
        executor.TRIAL_FN: ExecutionParameter(type=str),
        # The untuned settings as the framework's Trainer gets them (JSON, a Trainer's custom_config).
        executor.CUSTOM_CONFIG: ExecutionParameter(type=str, optional=True),
        executor.SPACE: ExecutionParameter(type=str),  # components/tuner/space.py, as JSON
        # The budget: trials x epochs x examples_per_trial training examples (budget.py).
        executor.TRIALS: ExecutionParameter(type=int),
        executor.EPOCHS: ExecutionParameter(type=int),
        executor.TRIAL_EXAMPLES: ExecutionParameter(type=int),
        executor.PRUNER: ExecutionParameter(type=str, optional=True),
        executor.STORAGE_URI: ExecutionParameter(type=str),
        executor.STUDY_PREFIX: ExecutionParameter(type=str, optional=True),
        executor.HEARTBEAT_S: ExecutionParameter(type=int, optional=True),
        # Worker processes in this task, and this task's place among the study's tasks (Kubeflow).
        executor.PROCESSES: ExecutionParameter(type=int, optional=True),
        executor.TASK_INDEX: ExecutionParameter(type=int, optional=True),
        # The study's runs in MLflow, beside the bake-off's (task 0 writes them).
        executor.REGISTRY_URI: ExecutionParameter(type=str, optional=True),
        executor.MODEL_NAME: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        executor.EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
        executor.SCHEMA: ChannelParameter(type=standard_artifacts.Schema, optional=True),
    }
    OUTPUTS = {
        executor.BEST_HYPERPARAMETERS: ChannelParameter(type=standard_artifacts.HyperParameters),
        executor.TUNER_RESULTS: ChannelParameter(type=standard_artifacts.TunerResults),
    }


class OptunaTuner(base_component.BaseComponent):
    SPEC_CLASS = OptunaTunerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, framework: str, trial_fn: str, custom_config: str, space: str,
                 trials: int, epochs: int, examples_per_trial: int, storage_uri: str, schema: types.BaseChannel
                 | None = None, pruner: str = "median", study_prefix: str = "", heartbeat_s: int = 30,
                 processes: int = 1, task_index: int = 0, registry_uri: str = "",
                 registered_model_name: str = "") -> None:
        super().__init__(spec=OptunaTunerSpec(
            examples=examples, schema=schema, framework=framework, trial_fn=trial_fn, custom_config=custom_config,
            space=space, trials=trials, epochs=epochs, examples_per_trial=examples_per_trial, pruner=pruner,
            storage_uri=storage_uri, study_prefix=study_prefix, heartbeat_s=heartbeat_s, processes=processes,
            task_index=task_index, registry_uri=registry_uri, registered_model_name=registered_model_name,
            best_hyperparameters=types.Channel(type=standard_artifacts.HyperParameters),
            tuner_results=types.Channel(type=standard_artifacts.TunerResults)))
