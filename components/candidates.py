"""Components that take any number of candidate models as named Model inputs.

ComponentSpec declares INPUTS on the class, so each component instance gets a subclass of its
base spec with one Model channel per candidate; executors see the candidates by name in
input_dict, and the Kubeflow compiler sees ordinary named inputs.
"""

from __future__ import annotations

from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

RESERVED = ("examples", "champion", "evaluation", "blessing", "statistics")
# A candidate's optional training logs (the Trainer's ModelRun: TensorBoard events) are the input
# named after it with this suffix.
RUN_SUFFIX = "_run"


def run_input(name: str) -> str:
    return name + RUN_SUFFIX


def is_training_log(input_name: str) -> bool:
    return input_name.endswith(RUN_SUFFIX)


def spec_with_candidates(base: type[ComponentSpec], names: list[str], minimum: int = 1,
                         with_runs: bool = False) -> type[ComponentSpec]:
    if len(names) < minimum:
        raise ValueError(f"{base.__name__} needs at least {minimum} candidates, got {names}")
    for name in names:
        if not name.isidentifier() or name in RESERVED or name.endswith(RUN_SUFFIX):
            raise ValueError(f"invalid candidate name {name!r}: use an identifier not in {RESERVED} "
                             f"and not ending in {RUN_SUFFIX!r}")
    inputs = {**base.INPUTS, **{name: ChannelParameter(type=standard_artifacts.Model) for name in names}}
    if with_runs:
        inputs.update({run_input(name): ChannelParameter(type=standard_artifacts.ModelRun, optional=True)
                       for name in names})
    return type(base.__name__, (base,), {"INPUTS": inputs})
