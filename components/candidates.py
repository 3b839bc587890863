"""Components that take any number of candidate models as named Model inputs.

ComponentSpec declares INPUTS on the class, so each component instance gets a subclass of its
base spec with one Model channel per candidate; executors see the candidates by name in
input_dict, and the Kubeflow compiler sees ordinary named inputs.
"""

from __future__ import annotations

from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

RESERVED = ("examples", "champion", "evaluation", "blessing", "statistics")


def spec_with_candidates(base: type[ComponentSpec], names: list[str], minimum: int = 1) -> type[ComponentSpec]:
    if len(names) < minimum:
        raise ValueError(f"{base.__name__} needs at least {minimum} candidates, got {names}")
    for name in names:
        if not name.isidentifier() or name in RESERVED:
            raise ValueError(f"invalid candidate name {name!r}: use an identifier not in {RESERVED}")
    inputs = {**base.INPUTS, **{name: ChannelParameter(type=standard_artifacts.Model) for name in names}}
    return type(base.__name__, (base,), {"INPUTS": inputs})
