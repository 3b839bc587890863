"""The TensorFlow ops of this project's Keras exports (every model, float32 and mixed_bfloat16),
TensorFlow 2.16.2: written by trainers.savedmodel_ops.write_allowlist(), not by hand;
tests/test_untrusted.py re-derives it from fresh exports."""

# Allowed anywhere in a SavedModel.
EXPORT_OPS = frozenset({
    "AddV2",
    "AssignVariableOp",
    "BiasAdd",
    "Cast",
    "Const",
    "Conv2D",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "NoOp",
    "Pack",
    "Placeholder",
    "ReadVariableOp",
    "Relu",
    "Reshape",
    "Rsqrt",
    "Shape",
    "Softmax",
    "Squeeze",
    "StatefulPartitionedCall",
    "StridedSlice",
    "Sub",
    "VarHandleOp",
    "VarIsInitializedOp",
})
# Allowed only in the saver's own functions (checkpoint reads and writes).
SAVER_OPS = frozenset({
    "DisableCopyOnRead",
    "MergeV2Checkpoints",
    "RestoreV2",
    "SaveV2",
    "Select",
    "ShardedFilename",
    "StaticRegexFullMatch",
    "StringJoin",
})
