"""The one command line: `python -m pipelines COMMAND` (make run / compile / summary / show call it).

  run        run the whole pipeline locally (LocalDagRunner, Beam DirectRunner)
  compile    compile the pipeline to a KFP v2 package (pipeline.yaml)
  presubmit  check a compiled package for its target before a cluster sees it
  deploy     upload a package to Kubeflow Pipelines (and run it), or submit it to Vertex AI
  launch     run a package's tasks here, one process each, as the KFP v2 launcher would
  executor   what each task's container runs: TFX's KFP v2 executor, S3 and minio:// roots enabled
  replica    what each replica of a multi-worker trainer's Kubeflow job runs: TFX's Trainer executor
  registry   list versions, roll the champion back, predict with the champion
  schema     propose a curated schema, or pin a drift baseline, from a run's artifacts
  serve      serve the registry's champion with MLServer (v2 protocol) on 127.0.0.1 until Ctrl-C
  kserve     render a KServe InferenceService for the champion, validated offline
  summary    the latest local run's decision and where its outputs are
  show       a run's comparison table, paired tests and decision
  ui         the MLflow UI and TensorBoard on a run's tracking store and trainer logs until Ctrl-C
  config-reference  rewrite docs/configuration.md from the config's fields

Every setting of the config (pipelines/config.py) is a flag of run, compile, summary, show,
registry, serve and kserve, generated from its field: `--epochs 2`, `--min-metric 0.99`, `--no-verify-checksums`.
This module is the edge: it alone reads the environment (MNIST_SOURCE, MLFLOW_TRACKING_URI) and
git, and passes what it found down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import typing
from typing import Any, Literal

import yaml

from pipelines import validation
from pipelines.config import REPO_ROOT, SECTIONS, PipelineConfig, load_config, setting_fields

# Environment variable -> the setting it provides (below a YAML file and flags).
ENVIRONMENT_SETTINGS = {"MNIST_SOURCE": "source", "MLFLOW_TRACKING_URI": "registry_uri"}
CONFIG_COMMANDS = {
    "run": "run the whole pipeline locally (LocalDagRunner, Beam DirectRunner)",
    "compile": "compile the pipeline to a KFP v2 package (pipeline.yaml)",
    "summary": "print the latest local run's decision and where its outputs are",
    "show": "print the bake-off's comparison table, paired tests and decision for a run",
    "ui": "serve the MLflow UI (the run's trainings, evaluation, registered version) and TensorBoard on "
          "127.0.0.1 until Ctrl-C",
}
GROUPS = {None: "pipeline settings", **{name: f"{name} settings ({cls.__name__})" for name, cls in SECTIONS.items()}}


# --- flags generated from the config's fields ----------------------------------------------------
def _flag_options(kind: Any, metadata: Any) -> dict[str, Any] | None:
    """argparse options for a setting of type `kind`; None for settings only a YAML file can set."""
    options: dict[str, Any] = {"default": None}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif kind in (int, float, str):
        options["type"] = kind
    elif typing.get_origin(kind) is Literal:
        options.update(type=str, choices=typing.get_args(kind))
    elif typing.get_origin(kind) is tuple:
        options.update(type=typing.get_args(kind)[0], nargs="+")
    else:
        return None
    if metadata.get("choices"):
        options["choices"] = metadata["choices"]
    return options


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings (keys: the flags' names with '_')")
    groups = {section: parser.add_argument_group(title) for section, title in GROUPS.items()}
    for name, (section, field, kind) in setting_fields().items():
        options = _flag_options(kind, field.metadata)
        if options is not None:
            help_text = field.metadata.get("help", "").replace("%", "%%")
            groups[section].add_argument("--" + name.replace("_", "-"), dest=name, help=help_text, **options)


def settings_from_environment(environ: typing.Mapping[str, str]) -> dict[str, str]:
    """The settings the environment provides; a registry URI with credentials in it is refused."""
    found = {setting: environ[variable] for variable, setting in ENVIRONMENT_SETTINGS.items()
             if environ.get(variable)}
    if "registry_uri" in found:
        validation.check_registry_uri(found["registry_uri"], "MLFLOW_TRACKING_URI")
    return found


def config_from_args(args: argparse.Namespace, environ: typing.Mapping[str, str]) -> PipelineConfig:
    flags = {name: getattr(args, name, None) for name in setting_fields()}
    return load_config(args.config, settings_from_environment(environ), **flags)


# --- the parser --------------------------------------------------------------------------------------
def _add_package_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", nargs="?", default=str(REPO_ROOT / "pipeline.yaml"))


def _add_deploy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package", default=str(REPO_ROOT / "pipeline.yaml"))
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="run parameter (repeat)")
    p.add_argument("--pipeline-root", help="artifact root of the run (default: the package's)")
    p.add_argument("--run-name")
    p.add_argument("--version", help="pipeline version name and code_revision (default: the git revision)")
    p.add_argument("--no-cache", action="store_true", help="run every task, reuse no cached result")
    p.add_argument("--skip-presubmit", action="store_true")


def _add_kubeflow_commands(sub: Any) -> None:
    check = sub.add_parser("presubmit", help="check a compiled package for its target")
    _add_package_argument(check)
    check.add_argument("--target", choices=("kubeflow", "vertex"), default="kubeflow")
    check.add_argument("--pipeline-root", help="the pipeline root the run will be given")
    launch = sub.add_parser("launch", help="run the package's tasks here, as the KFP v2 launcher would")
    _add_package_argument(launch)
    launch.add_argument("--run-root", required=True, help="artifact store of the run: a folder, or an s3:// or "
                        "minio:// prefix (endpoint and keys from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                        "AWS_ENDPOINT_URL, AWS_REGION, passed on to each task by name)")
    launch.add_argument("--json", action="store_true", help="print the output artifacts as JSON, not the summary")
    launch.add_argument("--scratch", help="local folder for each task's log and executor output file "
                        "(default: the run root, when it is a folder)")
    launch.add_argument("--param", action="append", metavar="NAME=VALUE", help="run parameter (repeat)")
    launch.add_argument("--image", help="run each task in a fresh container of this image (docker) instead of "
                        "this venv; the container sees only the object store or --run-root, --scratch and the "
                        "--mount folders")
    launch.add_argument("--mount", action="append", default=[], metavar="PATH",
                        help="a host folder the containers may read, at the same path (e.g. the MNIST source)")
    launch.add_argument("--parallelism", type=int, default=0, metavar="N",
                        help="at most N tasks at once, each as soon as its dependencies have finished "
                        "(default: one per core; 1: one after another)")
    deploy = sub.add_parser("deploy", help="upload pipeline.yaml and optionally run it")
    targets = deploy.add_subparsers(dest="target", required=True)
    kfp_p = targets.add_parser("kubeflow", help="open-source Kubeflow Pipelines (kfp.Client)")
    kfp_p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    kfp_p.add_argument("--namespace", default="kubeflow")
    kfp_p.add_argument("--pipeline-name", help="default: the package's pipeline name")
    kfp_p.add_argument("--run", action="store_true", help="start a run of the uploaded version")
    kfp_p.add_argument("--experiment", default="mnist-bakeoff")
    _add_deploy_flags(kfp_p)
    vtx = targets.add_parser("vertex", help="Vertex AI Pipelines (aiplatform.PipelineJob)")
    vtx.add_argument("--project", required=True)
    vtx.add_argument("--region", required=True)
    vtx.add_argument("--service-account")
    _add_deploy_flags(vtx)
    vtx.set_defaults(run=True, pipeline_name=None, experiment="")


def _add_registry_and_schema_commands(sub: Any) -> None:
    registry = sub.add_parser("registry", help="the model registry: list, rollback, predict, score")
    add_config_flags(registry)
    actions = registry.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="versions with their key metrics; which one is champion")
    rollback = actions.add_parser("rollback", help="move the champion alias back to VERSION; the version it "
                                  "leaves is rejected (no run promotes it again until reinstated)")
    rollback.add_argument("version")
    rollback.add_argument("--reason", default="")
    reinstate = actions.add_parser("reinstate", help="lift a rollback's rejection of VERSION (the alias does not "
                                   "move; a later run may promote it)")
    reinstate.add_argument("version")
    promote = actions.add_parser("promote", help="move the champion alias to VERSION, a person's decision (e.g. a "
                                 "version registered while the champion shift alarm held the alias)")
    promote.add_argument("version")
    reject = actions.add_parser("reject", help="reject VERSION (no run promotes it until reinstated); the alias "
                                "comes off it if it is the champion")
    reject.add_argument("version")
    reject.add_argument("--reason", default="")
    predict = actions.add_parser("predict", help="the champion's digit for a PNG or an IDX record")
    predict.add_argument("png", nargs="?")
    predict.add_argument("--idx", help="an images IDX file (raw or .gz)")
    predict.add_argument("--index", type=int, default=0)
    score = actions.add_parser("score", help="the champion's accuracy on an IDX images and labels pair")
    score.add_argument("images")
    score.add_argument("labels")
    score.add_argument("--limit", type=int, default=0, help="only the first N records (0: all)")
    schema = sub.add_parser("schema", help="propose a curated schema, or pin a drift baseline")
    kinds = schema.add_subparsers(dest="action", required=True)
    propose = kinds.add_parser("propose", help="a curated schema from a Split-train folder of TFRecords")
    propose.add_argument("split_dir")
    propose.add_argument("--output", default="schema/proposed_schema.pbtxt")
    baseline = kinds.add_parser("baseline", help="the pinned drift baseline from a StatisticsGen folder")
    baseline.add_argument("statistics_dir")
    baseline.add_argument("--output", default="schema/baseline_statistics.pbtxt")


def _add_serving_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve the registry's champion with MLServer on 127.0.0.1")
    add_config_flags(serve)
    for flag, default in (("--http-port", 8080), ("--grpc-port", 8081), ("--metrics-port", 8082),
                          ("--max-batch", 1024), ("--workers", 1)):
        serve.add_argument(flag, type=int, default=default)
    serve.add_argument("--max-body-mb", type=float, default=8.0, help="larger requests get 413")
    serve.add_argument("--serving-venv", default="", help="MLServer's environment (default: serving/bootstrap.sh)")
    kserve = sub.add_parser("kserve", help="print a KServe InferenceService for the champion")
    add_config_flags(kserve)
    kserve.add_argument("--name", default="", help="the InferenceService's name (default: from the model's)")
    for flag, default in (("--cpu", "1"), ("--memory", "2Gi"), ("--cpu-limit", "2"), ("--memory-limit", "4Gi"),
                          ("--runtime", "mnist-mlserver-verified")):  # serving/kserve_runtime.py
        kserve.add_argument(flag, default=default)
    kserve.add_argument("--output", "-o", default="", help="write it here instead of printing it")


def _serving_command(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from serving import commands

    registry_uri, name = cfg.resolved_registry_uri(), cfg.registered_model_name
    if args.command == "serve":
        return commands.serve(registry_uri, name, http_port=args.http_port, grpc_port=args.grpc_port,
                              metrics_port=args.metrics_port, max_body_mb=args.max_body_mb,
                              max_batch=args.max_batch, workers=args.workers, venv=args.serving_venv)
    return commands.render_inference_service(
        registry_uri, name, artifacts_destination=cfg.kserve_artifacts_destination,
        service_account=cfg.kserve_service_account, name=args.name, namespace=cfg.kserve_namespace,
        canary_traffic_percent=cfg.kserve_canary_traffic_percent if cfg.kserve_canary_traffic_percent >= 0 else None,
        cpu=args.cpu, memory=args.memory, cpu_limit=args.cpu_limit, memory_limit=args.memory_limit,
        runtime=args.runtime, output=args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in CONFIG_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_config_flags(p)
        if name == "compile":
            p.add_argument("--output", default=str(REPO_ROOT / "pipeline.yaml"))
        if name in ("run", "summary"):
            p.add_argument("--json", action="store_true", help="print the summary as JSON")
        if name == "run":
            p.add_argument("--verbose", action="store_true", help="on a failure, print the traceback too "
                           "(it is always in the run's log file)")
        if name in ("summary", "show", "ui"):
            p.add_argument("--run", help="pipeline run id (default: the latest run)")
    _add_kubeflow_commands(sub)
    _add_registry_and_schema_commands(sub)
    _add_serving_commands(sub)
    sub.add_parser("config-reference", help="rewrite docs/configuration.md from the config's fields")
    return parser


# --- the commands --------------------------------------------------------------------------------
def print_summary(summary: dict, seconds: float | None = None) -> None:
    print(f"\n=== MNIST bake-off (run {summary['run_id']}) ===")
    print(summary["table"])
    print(f"winner:     {summary['winner']} ({'blessed' if summary['blessed'] else 'NOT blessed'})")
    print(f"verdict:    {summary['tie_statement']}")
    for name, acc in sorted(summary["accuracy"].items()):
        print(f"accuracy:   {name:<14} {acc:.4f} on the test split")
    for reason in summary["reasons"]:
        print(f"  - {reason}")
    version = summary["registered_version"]
    if not version:
        pushed = "nothing pushed"
    elif summary.get("promoted"):
        pushed = f"version {version}, alias champion"
    else:
        pushed = f"version {version} registered, NOT promoted: {summary.get('push_reason', '')}"
    print(f"registry:   {summary['registry']}  ({pushed})")
    if summary.get("champion_resolved"):
        print(f"judged against: {summary['champion_resolved']}")
    print(f"report:     {summary['report']}")
    if summary.get("data_review"):
        print(f"data:       {summary['data_review']}")
    print(f"evaluation: {summary['evaluation']}")
    if summary.get("tracking"):
        runs = summary["tracking"]
        print(f"mlflow:     experiment {runs['experiment_id']}: {len(runs['training_run_ids'])} training runs and "
              "the evaluation run (`make ui` opens them, with TensorBoard)")
    print(f"artifacts:  {summary['artifacts']}")
    print(f"metadata:   {summary['metadata']}")
    total = sum(summary["stage_seconds"].values())
    print("stages of this run (wall time of each execution; cached ones take ~0 s):")
    for node, s in summary["stage_seconds"].items():
        print(f"  {node:<22} {s:8.1f} s  {100 * s / total if total else 0:5.1f} %")
    if seconds is not None:
        print(f"wall time:  {seconds:.1f} s")


def _run(cfg: PipelineConfig, verbose: bool, json_out: bool = False) -> dict | None:
    """A local run: its output in its own log file, a line per stage and epoch on the terminal
    (pipelines/terminal.py); a failure prints one block (pipelines/failure.py) and gives None."""
    import logging
    import traceback

    from pipelines import terminal

    log_path = os.path.join(cfg.output_root, "logs", f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    try:
        with terminal.quiet_run(log_path, verbose, lines_fd=2 if json_out else 1):
            try:  # imported here: TensorFlow's import already writes to stderr
                from components import object_store
                from pipelines import local_runner, revision

                if object_store.is_object_store(cfg.pipeline_root):
                    object_store.enable_s3(os.environ)
                os.environ.setdefault("CODE_REVISION", revision.code_revision())  # a tag on a version it registers
                return local_runner.run_local(cfg, code_version=revision.code_fingerprint())
            except Exception:
                logging.getLogger(__name__).error("the run failed", exc_info=True)  # into the log
                raise
    except Exception as e:  # the user's problem in words; the traceback is in the log
        from pipelines import failure

        if verbose:
            traceback.print_exc()
        print(failure.error_block("python -m pipelines run", cfg, e, log_path), file=sys.stderr)
        return None


def _config_command(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    if args.command == "compile":
        from pipelines.kubeflow.compile import compile_kubeflow

        try:
            print(compile_kubeflow(cfg, args.output))
        except ValueError as e:  # a setting the cluster cannot run, said before anything is written
            print(f"error: cannot compile {args.output}: {e}", file=sys.stderr)
            return 2
    elif args.command == "show":
        from components.artifacts import REPORT_FILE
        from components.bakeoff_evaluator import report
        from pipelines import summary

        evaluation, evaluation_dir = summary.load_evaluation(cfg, args.run)
        print(report.render_markdown(evaluation))
        print(f"report: {os.path.join(evaluation_dir, REPORT_FILE)}")
    elif args.command == "ui":
        from pipelines import ui

        return ui.serve(cfg, args.run)
    else:
        started = time.monotonic()
        if args.command == "run":
            result = _run(cfg, args.verbose, args.json)
            if result is None:
                return 1
        else:
            from pipelines import summary

            result = summary.summarize(cfg, args.run)
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            print_summary(result, time.monotonic() - started if args.command == "run" else None)
    return 0


def _registry_command(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from components.registry import MlflowRegistry, RegistryError
    from pipelines import registry_commands
    from trainers.manifest import ManifestError

    try:
        registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name,
                                  lock_uri=cfg.registry_lock_uri)
        if args.action == "list":
            registry_commands.list_versions(registry)
        elif args.action == "rollback":
            registry_commands.rollback(registry, args.version, args.reason)
        elif args.action == "reinstate":
            registry_commands.reinstate(registry, args.version)
        elif args.action == "promote":
            registry_commands.promote(registry, args.version)
        elif args.action == "reject":
            registry_commands.reject(registry, args.version, args.reason)
        elif args.action == "score":
            print(json.dumps(registry_commands.score_files(registry, args.images, args.labels, args.limit)))
        else:
            registry_commands.predict_file(registry, args.png, args.idx, args.index)
    except (RegistryError, ManifestError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def deployment_from_args(args: argparse.Namespace):
    """What `deploy` will do (pipelines.kubeflow.deploy.Deployment), from its flags and git."""
    from pipelines.kubeflow import deploy
    from pipelines.revision import code_revision

    return deploy.build_deployment(
        args.package, args.version or code_revision(), args.param or [], pipeline_name=args.pipeline_name,
        pipeline_root=args.pipeline_root, run=args.run, run_name=args.run_name, experiment=args.experiment,
        enable_caching=False if args.no_cache else None)


def _launch_command(args: argparse.Namespace) -> int:
    from components import object_store
    from pipelines.kubeflow import deploy, launch, package

    values = deploy.parse_parameters(args.param or [], package.Package.read(args.package))
    container = launch.Container(args.image, tuple(os.path.abspath(m) for m in args.mount)) if args.image else None
    remote = object_store.is_object_store(args.run_root)
    run_root = args.run_root if remote else os.path.abspath(args.run_root)
    if remote and not args.scratch:
        print(f"error: run root {run_root} is an object store: give --scratch, a local folder for the task logs",
              file=sys.stderr)
        return 2
    scratch = os.path.abspath(args.scratch) if args.scratch else run_root
    if remote:  # the summary reads the evaluation back from the store
        object_store.enable_s3(os.environ)
    from pipelines import model_keys

    model_keys.use_local_keys()  # its pusher signs, its resolver and evaluator verify (launch hands them on)
    started = time.monotonic()
    try:
        outputs = launch.launch_locally(args.package, run_root, values, container=container, scratch=scratch,
                                        environment=object_store.credentials(os.environ) if remote else None,
                                        parallelism=args.parallelism or None)
    except launch.TaskFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(outputs, indent=2))
        return 0
    registry_uri = values.get("registry_uri") or ""
    print_summary(launch.launch_summary(outputs, run_root, registry_uri, scratch), time.monotonic() - started)
    return 0


def _kubeflow_command(args: argparse.Namespace) -> int:
    from pipelines.kubeflow import deploy, presubmit

    if args.command == "presubmit":
        problems = presubmit.presubmit_problems(args.package, args.target, pipeline_root=args.pipeline_root)
        for warning in presubmit.presubmit_warnings(args.package):
            print(f"warning: {warning}")
        print("\n".join(problems) or f"{args.package}: ok for {args.target}")
        return 1 if problems else 0
    if args.command == "launch":
        return _launch_command(args)
    deployment = deployment_from_args(args)
    if not args.skip_presubmit:
        problems = presubmit.presubmit_problems(deployment.package, args.target,
                                                pipeline_root=deployment.pipeline_root,
                                                parameters=deployment.parameters)
        if problems:
            print("\n".join(problems + ["not deployed (--skip-presubmit to deploy anyway)"]), file=sys.stderr)
            return 1
    if args.target == "kubeflow":
        import kfp

        client = kfp.Client(host=args.host, namespace=args.namespace)
        print(json.dumps(deploy.deploy_kubeflow(deployment, client), indent=2))
    else:
        print(deploy.deploy_vertex(deployment, args.project, args.region, args.service_account))
    return 0


def _schema_command(args: argparse.Namespace) -> int:
    from pipelines import schema_tool

    if args.action == "propose":
        print(schema_tool.propose_schema(args.split_dir, args.output))
    else:
        print(schema_tool.write_baseline(args.statistics_dir, args.output))
    return 0


def main(argv: list[str] | None = None, environ: typing.Mapping[str, str] | None = None) -> int:
    import logging

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["executor"]:  # TFX's own flags follow, passed through untouched
        from pipelines.kubeflow import entrypoint

        return entrypoint.run_executor(argv[1:], os.environ)
    if argv[:1] == ["replica"]:  # tfx.scripts.run_executor's flags follow (components/training_job/executor.py)
        from pipelines.kubeflow import entrypoint

        return entrypoint.run_replica(argv[1:], os.environ)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "config-reference":
        from pipelines import config_reference

        print(config_reference.write())
        return 0
    if args.command in ("schema",):
        return _schema_command(args)
    if args.command not in (*CONFIG_COMMANDS, "registry", "serve", "kserve"):
        return _kubeflow_command(args)
    try:
        cfg = config_from_args(args, os.environ if environ is None else environ)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as e:
        # A bad setting is the user's input: one line naming it (and the file), not a traceback.
        problem = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        parser.error(f"invalid configuration ({f'{args.config} and ' if args.config else ''}flags): {problem}")
    if args.command in ("run", "registry", "serve"):
        from pipelines import model_keys

        # The user's own keys unless the environment names keys; only `run` signs, so only it makes them.
        model_keys.use_local_keys(create=args.command == "run")
    if args.command == "registry":
        return _registry_command(args, cfg)
    if args.command in ("serve", "kserve"):
        return _serving_command(args, cfg)
    return _config_command(args, cfg)
