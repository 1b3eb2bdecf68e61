"""Named arrays -> the variables of a built model, all or nothing.

``assign_tensors`` takes the variables of a model by path (``model_variables``)
and checkpoint tensors already renamed and laid out for them
(``keras_vit.weights.mappings.to_keras_tensors``), validates every one, and
assigns only when everything fits. It knows nothing of how a model is built:
fitting tensors to an architecture (the position-embedding grid) happens
before, in ``keras_vit.model.loading``.
"""

from __future__ import annotations

import warnings

from keras_vit.messages import KerasVitWarning
from keras_vit.weights.mappings import TOP_LAYERS


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model: lists every offending tensor."""


def model_variables(model):
    """``{path relative to the model: variable}`` of a built Keras model."""
    prefix = f"{model.name}/"
    return {v.path[len(prefix) :]: v for v in model.weights if v.path.startswith(prefix)}


#: Problems listed in full in a mismatch error; the rest are counted.
MAX_LISTED = 20


def assign_tensors(variables, tensors, origin, problems, source, target, lead=None):
    """Validates every tensor against ``variables``, then assigns them all.

    Head handling: a top layer (``pre_logits``, ``head``) whose shape differs
    from the checkpoint's is left initialised with a warning; a model
    without one ignores the checkpoint's. The head is not loaded when the
    checkpoint's ``pre_logits`` is dropped (its inputs would differ). Every
    other variable must have a tensor of exactly its shape, and every tensor
    a variable.

    Args:
        variables: dict ``{path: variable}`` (``model_variables``).
        tensors: dict ``{path: array}`` in the variables' layout.
        origin: dict ``{path: checkpoint name}`` for the messages.
        problems: list of str. Problems found earlier (renaming, fitting);
            reported with the rest.
        source: str. What the tensors came from (``"Checkpoint x.npz
            (official format)"``).
        target: str. The model's name.
        lead: callable or None. Called only when something does not fit, for
            one sentence put before the list (what differs between the
            checkpoint's architecture and the model's).

    Returns:
        dict ``{path: checkpoint name}`` of the assigned variables.

    Raises:
        CheckpointMismatchError: (a ``ValueError``) listing every missing,
            unexpected or mis-shaped tensor with both shapes; no variable is
            changed then.
    """
    problems = list(problems)
    skipped_top, notices = _top_layers_to_skip(variables, tensors, origin, problems)
    values = {}
    for path, variable in variables.items():
        if path.split("/")[0] in skipped_top:
            continue
        if path not in tensors:
            problems.append(f"missing tensor for {path!r} {tuple(variable.shape)}")
            continue
        value = tensors[path]
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(
                f"mis-shaped tensor {origin[path]!r}: checkpoint shape "
                f"{tuple(value.shape)}, model variable {path!r} expects "
                f"{tuple(variable.shape)}"
            )
            continue
        values[path] = value
    for path in sorted(set(tensors) - set(variables)):
        if path.split("/")[0] not in TOP_LAYERS:
            problems.append(
                f"unexpected tensor {origin[path]!r} {tuple(tensors[path].shape)} "
                f"(would be {path!r}; the model has no such variable)"
            )
    if problems:
        listed = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            listed.append(f"... and {len(problems) - MAX_LISTED} more")
        head = f"{source} does not fit model {target!r}"
        summary = lead() if lead else None
        head += f": {summary}\nDetails" if summary else ""
        raise CheckpointMismatchError(f"{head}:\n  - " + "\n  - ".join(listed))
    for notice in notices:  # only for a load that goes ahead
        warnings.warn(notice, KerasVitWarning, stacklevel=4)
    for path, value in values.items():
        variables[path].assign(value.astype(variables[path].dtype))
    return {path: origin[path] for path in values}


def _top_layers_to_skip(variables, tensors, origin, problems):
    """Top layers (``pre_logits``, ``head``, ``head_dist``) left initialised, and why.

    An incomplete top layer (a bias without its kernel) is a problem, added
    to ``problems``: it is a damaged file, not a model with new classes.

    Returns:
        ``(skipped layers, notices)``: the notices are warned once the load
        goes ahead.
    """
    skipped, notices = set(), []
    model_has = {layer: any(p.startswith(layer + "/") for p in variables) for layer in TOP_LAYERS}
    ckpt_has = {layer: any(p.startswith(layer + "/") for p in tensors) for layer in TOP_LAYERS}
    if ckpt_has["pre_logits"] and not model_has["pre_logits"]:
        message = (
            "the checkpoint's pre_logits (representation) layer is dropped "
            "(representation_size=None)"
        )
        if model_has["head"] and ckpt_has["head"]:
            skipped.add("head")
            message += "; its head, trained on those features, is not loaded either"
        notices.append(message + ".")
    for layer in TOP_LAYERS:
        if not model_has[layer] or layer in skipped:
            continue
        if not ckpt_has[layer]:
            notices.append(
                f"The checkpoint has no {layer!r} layer; the model's is left initialised."
            )
            skipped.add(layer)
            continue
        own = {p: v for p, v in variables.items() if p.startswith(layer + "/")}
        missing = sorted(p for p in own if p not in tensors)
        if missing:  # part of a layer: a corrupt file, not a new head
            problems.append(
                f"the checkpoint's {layer!r} layer is incomplete: it has "
                f"{sorted(origin[p] for p in tensors if p.startswith(layer + '/'))} but no tensor "
                f"for {missing}"
            )
            skipped.add(layer)
            continue
        mismatched = [
            f"{origin[p]!r} {tuple(tensors[p].shape)} vs model {tuple(v.shape)}"
            for p, v in own.items()
            if tuple(tensors[p].shape) != tuple(v.shape)
        ]
        if mismatched:
            notices.append(
                f"Not loading the checkpoint's {layer!r} layer, whose shape differs from the "
                f"model's{_why_top_differs(layer, tensors, variables)}: {'; '.join(mismatched)}. "
                f"The model's {layer!r} is left initialised."
            )
            skipped.add(layer)
    return skipped, notices


def _why_top_differs(layer, tensors, variables):
    """`` (checkpoint: 1000 classes, model: 10)``, or what else differs when the classes agree."""
    bias, kernel = f"{layer}/bias", f"{layer}/kernel"
    if layer == "pre_logits" or bias not in tensors or bias not in variables:
        return ""
    stored, wanted = tensors[bias].shape[0], variables[bias].shape[0]
    if stored != wanted:
        return f" (checkpoint: {stored} classes, model: {wanted})"
    return (
        f" (both {wanted} classes, but the head's input width differs: checkpoint "
        f"{tensors[kernel].shape[0]}, model {variables[kernel].shape[0]})"
    )
