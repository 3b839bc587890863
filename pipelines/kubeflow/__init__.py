"""The Kubeflow Pipelines / Vertex AI side of the pipeline, one module per job: `package`
(reading and writing pipeline.yaml), `placement` (trainers on accelerator nodes), `compile`,
`presubmit`, `deploy` and `launch` (the package's tasks run here, as the KFP launcher would).
Their commands are `python -m pipelines compile|presubmit|deploy|launch`."""
