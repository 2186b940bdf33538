"""Which BatchNorm layers re-estimate their statistics while training: the trainer sets the modes by it, and the
batch-size check asks it before anything is written."""
from __future__ import annotations


def batchnorm_trains(model, name: str, module, grouped) -> bool:
    """Whether the BatchNorm layer `name` re-estimates its statistics (under bn_stats="auto"): when one of its
    own parameters trains; a layer without parameters (affine=False) when one of its depth group's (`grouped`:
    model.grouped_parameters()) does, the modules a strategy adds inside the group (LoRA, adapters:
    `model.new_markers`) aside, as they make no affine BatchNorm beside them update either. Where no group's
    prefix covers its path, its nearest enclosing module that holds parameters decides."""
    own = list(module.parameters(recurse=False))
    if own:
        return any(p.requires_grad for p in own)
    try:
        params = grouped[model.group_index(name)]
    except KeyError:
        params, path = [], name
        while not params and path:
            path = path.rpartition(".")[0]
            params = list(model.get_submodule(path).named_parameters(prefix=path))
    added = tuple(f".{marker}." for marker in model.new_markers)
    return any(p.requires_grad for n, p in params if not any(m in f".{n}" for m in added))
