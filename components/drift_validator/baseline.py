"""The drift baseline: the statistics of the run that produced the current champion, found in the
pipeline's ML Metadata, else the pinned baseline file from the config."""

from __future__ import annotations

import logging
import os

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

log = logging.getLogger(__name__)


def _pushed(artifact: metadata_store_pb2.Artifact) -> bool:
    value = artifact.custom_properties.get("pushed")
    return value is not None and value.int_value == 1


def champion_statistics_uri(store: metadata_store.MetadataStore) -> str | None:
    """URI of the ExampleStatistics of the pipeline run whose model was pushed last (the champion)."""
    pushed = sorted((a for a in store.get_artifacts_by_type("PushedModel") if _pushed(a)),
                    key=lambda a: a.id, reverse=True)
    for model in pushed:
        producers = [e.execution_id for e in store.get_events_by_artifact_ids([model.id])
                     if e.type == metadata_store_pb2.Event.OUTPUT]
        for execution_id in producers:
            for context in store.get_contexts_by_execution(execution_id):
                if context.type != "pipeline_run":
                    continue
                stats = [a for a in store.get_artifacts_by_context(context.id)
                         if a.type == "ExampleStatistics" and a.state == metadata_store_pb2.Artifact.LIVE]
                if stats:
                    return max(stats, key=lambda a: a.id).uri
    return None


def resolve_baseline(metadata_path: str | None, pinned: str, from_champion: bool) -> str:
    """The champion run's statistics when asked for and found, else the pinned file."""
    if not (from_champion and pinned and metadata_path and os.path.exists(metadata_path)):
        return pinned
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    uri = champion_statistics_uri(store)
    if uri:
        log.info("drift baseline: the champion's run statistics %s", uri)
        return uri
    log.info("drift baseline: no champion in %s yet, the pinned %s", metadata_path, pinned)
    return pinned
