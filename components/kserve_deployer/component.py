"""KServeDeployer (Kubeflow target only, optional): when this run moved the champion alias, the KServe
InferenceService of the version this run's RegistryPusher registered (as its pushed_model artifact
names it; the registry is not asked), applied to the cluster."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.kserve_deployer import executor


class KServeDeployerSpec(ComponentSpec):
    PARAMETERS = {
        executor.REGISTRY_URI: ExecutionParameter(type=str),
        executor.MODEL_NAME: ExecutionParameter(type=str),
        executor.NAMESPACE: ExecutionParameter(type=str, optional=True),
        executor.SERVICE_ACCOUNT: ExecutionParameter(type=str),
        executor.ARTIFACTS_DESTINATION: ExecutionParameter(type=str),
        executor.CANARY: ExecutionParameter(type=int),
    }
    INPUTS = {executor.PUSHED_MODEL: ChannelParameter(type=standard_artifacts.PushedModel)}
    # Where the champion is served: the rendered InferenceService and what was done with it.
    OUTPUTS = {executor.DEPLOYMENT: ChannelParameter(type=standard_artifacts.PushedModel)}


class KServeDeployer(base_component.BaseComponent):
    SPEC_CLASS = KServeDeployerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, pushed_model: types.BaseChannel, registry_uri: str, registered_model_name: str,
                 service_account: str, artifacts_destination: str, namespace: str = "",
                 canary_traffic_percent: int = -1) -> None:
        """canary_traffic_percent: the share of traffic the new champion gets while the previous
        revision keeps the rest (KServe's canary rollout); negative: all of it at once.
        registered_model_name: the model this step serves (a pushed version of another is refused);
        registry_uri: recorded in the step's properties only (the executor reads the pushed artifact)."""
        super().__init__(spec=KServeDeployerSpec(
            pushed_model=pushed_model, registry_uri=registry_uri, registered_model_name=registered_model_name,
            namespace=namespace, service_account=service_account, artifacts_destination=artifacts_destination,
            canary_traffic_percent=canary_traffic_percent,
            deployment=types.Channel(type=standard_artifacts.PushedModel)))
