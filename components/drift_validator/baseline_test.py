"""The champion's run statistics found through a real ML Metadata store, else the pinned file."""

from __future__ import annotations

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd
from tfx.orchestration import metadata

from components.drift_validator.baseline import champion_statistics_uri, resolve_baseline

PINNED = "/pinned/baseline_statistics.pbtxt"


def _type(store, kind, name: str) -> int:
    put = store.put_artifact_type if kind is mlmd.ArtifactType else (
        store.put_execution_type if kind is mlmd.ExecutionType else store.put_context_type)
    return put(kind(name=name))


def record_run(store, run_name: str, stats_uri: str, pushed: int) -> None:
    """One pipeline run as TFX records it: StatisticsGen's output and the pusher's PushedModel,
    both attributed to the run's pipeline_run context."""
    run = mlmd.Context(type_id=_type(store, mlmd.ContextType, "pipeline_run"), name=run_name)
    [run_id] = store.put_contexts([run])
    execution_type = _type(store, mlmd.ExecutionType, "Executor")
    stats = mlmd.Artifact(type_id=_type(store, mlmd.ArtifactType, "ExampleStatistics"), uri=stats_uri,
                          state=mlmd.Artifact.LIVE)
    model = mlmd.Artifact(type_id=_type(store, mlmd.ArtifactType, "PushedModel"), uri=f"{run_name}/pushed",
                          state=mlmd.Artifact.LIVE)
    model.custom_properties["pushed"].int_value = pushed
    out = mlmd.Event(type=mlmd.Event.OUTPUT)
    for artifact in (stats, model):
        store.put_execution(mlmd.Execution(type_id=execution_type), [(artifact, out)],
                            [mlmd.Context(id=run_id, type_id=run.type_id, name=run_name)])


def test_champion_run_statistics_are_the_baseline(tmp_path):
    path = str(tmp_path / "metadata.sqlite")
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(path))
    assert champion_statistics_uri(store) is None
    assert resolve_baseline(path, PINNED, from_champion=True) == PINNED  # no champion yet

    record_run(store, "run-1", "/stats/run-1", pushed=1)
    record_run(store, "run-2", "/stats/run-2", pushed=0)  # not blessed: not the champion
    assert champion_statistics_uri(store) == "/stats/run-1"
    assert resolve_baseline(path, PINNED, from_champion=True) == "/stats/run-1"
    assert resolve_baseline(path, PINNED, from_champion=False) == PINNED

    record_run(store, "run-3", "/stats/run-3", pushed=1)  # a newer champion
    assert resolve_baseline(path, PINNED, from_champion=True) == "/stats/run-3"


def test_no_store_or_no_drift_check(tmp_path):
    assert resolve_baseline(str(tmp_path / "absent.sqlite"), PINNED, from_champion=True) == PINNED
    assert resolve_baseline(None, PINNED, from_champion=True) == PINNED
    assert resolve_baseline(str(tmp_path / "absent.sqlite"), "", from_champion=True) == ""
