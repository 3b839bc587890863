"""The TensorFlow ops a SavedModel may hold before it is loaded: those this project's own Keras
exports need, nothing else.

A SavedModel is a program. Its functions run when it is loaded (resource initializers) and when it
is called (its signatures, its `serve` method), and they may hold any op TensorFlow has: WriteFile,
ReadFile, MatchingFiles, SaveV2 to a path of the author's choosing, PyFunc. TensorFlow's
`saved_model_cli scan` looks for a denylist (WriteFile, ReadFile, PrintV2), ProtectAI's modelscan
for a longer one; an allowlist also refuses what no denylist names yet. The allowlist is data
(trainers/savedmodel_allowlist.py), written by `write_allowlist()` from fresh exports of every
model the Keras trainer builds; a test re-derives it, so it stays exactly what the exports need.

Every node of the graph and every function of its library is checked, whatever reaches it: each
signature, the init op (`__saved_model_init_op`), the object graph's functions, or nothing. The
checkpoint ops (SaveV2, RestoreV2, MergeV2Checkpoints, ...) are allowed only in the saver's own
functions: those that the save and restore nodes of saver_def call and nothing else reaches (a
serving function calling SaveV2 writes a checkpoint wherever its author chose, and is refused).
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the scan itself needs no TensorFlow import: the loader imports this module in any process
    from tensorflow.core.framework import graph_pb2, node_def_pb2
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

GRAPH = "the graph"  # the place of meta_graph.graph_def's own nodes (not those of a function)
ALLOWLIST_MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "savedmodel_allowlist.py")


def _node_name(tensor_name: str) -> str:
    """"^name" (a control input) or "name:1" (an output) -> "name"."""
    return tensor_name.lstrip("^").split(":")[0]


def _called_functions(node: node_def_pb2.NodeDef, library: set[str]) -> Iterator[str]:
    """The library functions `node` calls: as its op, or named in any attr (PartitionedCall's and
    StatefulPartitionedCall's `f`, If's branches, While's cond and body, Case's branches, a
    dataset's map function...)."""
    if node.op in library:
        yield node.op
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        if value.HasField("list"):
            yield from (func.name for func in value.list.func)


def _reachable(graph: graph_pb2.GraphDef, nodes: Iterable[node_def_pb2.NodeDef] = (),
               functions: Iterable[str] = ()) -> set[str]:
    """The library functions these nodes call and these functions are, and every function those
    call (or have as gradient), to any depth."""
    library = {f.signature.name: f for f in graph.library.function}
    gradients = collections.defaultdict(list)
    for gradient in graph.library.gradient:
        gradients[gradient.function_name].append(gradient.gradient_func)
    names = set(library)
    seen: set[str] = set()
    todo = [*functions, *(name for node in nodes for name in _called_functions(node, names))]
    while todo:
        name = todo.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        todo.extend(gradients[name])
        todo.extend(called for node in library[name].node_def for called in _called_functions(node, names))
    return seen


def _upstream(graph: graph_pb2.GraphDef, tensor_names: Iterable[str]) -> set[str]:
    """Names of the graph nodes these tensors (or ops) come from, and every node they read, to any depth."""
    nodes = {node.name: node for node in graph.node}
    todo = [_node_name(t) for t in tensor_names if t]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        todo.extend(_node_name(i) for i in nodes[name].input)
    return seen


def _entry_points(meta_graph: meta_graph_pb2.MetaGraphDef) -> set[str]:
    """Graph nodes a loader runs: those of every signature (the serving ones and
    __saved_model_init_op) and of the init ops TF1 loaders take from collections."""
    tensors = [info.name for signature in meta_graph.signature_def.values()
               for info in (*signature.inputs.values(), *signature.outputs.values())]
    tensors += [name for collection in meta_graph.collection_def.values() for name in collection.node_list.value]
    return _upstream(meta_graph.graph_def, tensors)


def saver_functions(meta_graph: meta_graph_pb2.MetaGraphDef) -> set[str]:
    """The library functions only the saver calls: those its save and restore nodes (saver_def)
    reach, less any that a signature, the init op, the object graph or any other node of the
    graph reaches too (a signature pointing at the saver's save op makes it no saver's)."""
    graph, saver = meta_graph.graph_def, meta_graph.saver_def
    saver_nodes = _upstream(graph, (saver.filename_tensor_name, saver.save_tensor_name, saver.restore_op_name))
    saver_nodes -= _entry_points(meta_graph)
    others = _reachable(graph, (node for node in graph.node if node.name not in saver_nodes),
                        meta_graph.object_graph_def.concrete_functions)
    return _reachable(graph, (node for node in graph.node if node.name in saver_nodes)) - others


def ops_by_place(meta_graph: meta_graph_pb2.MetaGraphDef) -> dict[str, set[str]]:
    """{place: the ops there}: GRAPH for the graph's own nodes, "function NAME" for each function
    of its library (every one, whatever reaches it). Calls of library functions are not ops."""
    graph = meta_graph.graph_def
    library = {f.signature.name for f in graph.library.function}
    places = {GRAPH: {node.op for node in graph.node if node.op not in library}}
    for function in graph.library.function:
        places[f"function {function.signature.name}"] = {n.op for n in function.node_def if n.op not in library}
    return places


def _places_and_saver_places(meta_graph: meta_graph_pb2.MetaGraphDef) -> tuple[dict[str, set[str]], set[str]]:
    return ops_by_place(meta_graph), {f"function {name}" for name in saver_functions(meta_graph)}


def refused_ops(saved_model: saved_model_pb2.SavedModel) -> list[str]:
    """"OP in PLACE" for every op outside the allowlist, sorted; empty when every op is allowed."""
    from trainers.savedmodel_allowlist import EXPORT_OPS, SAVER_OPS

    refused = set()
    for meta_graph in saved_model.meta_graphs:
        places, saver_places = _places_and_saver_places(meta_graph)
        for place, ops in places.items():
            allowed = EXPORT_OPS | SAVER_OPS if place in saver_places else EXPORT_OPS
            refused.update(f"{op} in {place}" for op in ops - allowed)
    return sorted(refused)


# --- the allowlist, derived from the project's exports ------------------------------------------
def ops_needed(saved_model: saved_model_pb2.SavedModel) -> tuple[set[str], set[str]]:
    """(ops outside the saver, ops of the saver only) of one SavedModel."""
    anywhere: set[str] = set()
    saver: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        places, saver_places = _places_and_saver_places(meta_graph)
        for place, ops in places.items():
            (saver if place in saver_places else anywhere).update(ops)
    return anywhere, saver - anywhere


def read_saved_model(model_dir: str) -> saved_model_pb2.SavedModel:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model


def export_project_models(folder: str) -> list[str]:
    """A fresh SavedModel of every model the Keras trainer builds, in float32 and in the mixed
    precision it trains with on a GPU or TPU, written by its own export: their folders."""
    import keras

    from trainers import config, distributed, keras_trainer

    exported = []
    previous = keras.mixed_precision.global_policy()
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            for name in config.MODEL_NAMES:
                model_dir = os.path.join(folder, f"{name}-{policy}")
                keras_trainer.export(keras_trainer.build_model(name), model_dir, distributed.World())
                exported.append(model_dir)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return exported


def derive_allowlist(model_dirs: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(EXPORT_OPS, SAVER_OPS): the ops these SavedModels hold outside the saver, and those only
    their savers hold."""
    anywhere: set[str] = set()
    saver: set[str] = set()
    for model_dir in model_dirs:
        outside, inside = ops_needed(read_saved_model(model_dir))
        anywhere |= outside
        saver |= inside
    return frozenset(anywhere), frozenset(saver - anywhere)


def allowlist_source(export_ops: frozenset[str], saver_ops: frozenset[str]) -> str:
    """The allowlist module's text: two sorted frozensets, one op a line."""
    import tensorflow as tf

    def frozenset_lines(name: str, ops: frozenset[str]) -> str:
        return f"{name} = frozenset({{\n" + "".join(f'    "{op}",\n' for op in sorted(ops)) + "})\n"

    return (f'"""The TensorFlow ops of this project\'s Keras exports (every model, float32 and mixed_bfloat16),\n'
            f"TensorFlow {tf.__version__}: written by trainers.savedmodel_ops.write_allowlist(), not by hand;\n"
            'tests/test_untrusted.py re-derives it from fresh exports."""\n\n'
            "# Allowed anywhere in a SavedModel.\n" + frozenset_lines("EXPORT_OPS", export_ops) +
            "# Allowed only in the saver's own functions (checkpoint reads and writes).\n" +
            frozenset_lines("SAVER_OPS", saver_ops))


def write_allowlist(output: str = ALLOWLIST_MODULE) -> str:
    """Derives the allowlist from fresh exports of the project's Keras models and writes it as the
    module at `output`: what to run after a TensorFlow or Keras upgrade changes the exports (the
    test that re-derives it says so). A line saying what was written."""
    with tempfile.TemporaryDirectory(prefix="allowlist-") as folder:
        export_ops, saver_ops = derive_allowlist(export_project_models(folder))
    with open(output, "w") as f:
        f.write(allowlist_source(export_ops, saver_ops))
    return f"{output}: {len(export_ops)} ops anywhere, {len(saver_ops)} in the saver's functions only"
