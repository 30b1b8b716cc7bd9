"""Checkpoints as people save them: a plain state_dict, one wrapped in a dict
(`{'state_dict': ...}`, `{'model': ...}` as timm's, DeiT's and DINO's training scripts save,
...), keys prefixed by DataParallel (`module.`) or torch.compile (`_orig_mod.`), and
safetensors files. A checkpoint that still does not fit the architecture is refused with
a short message (how many keys are missing and unexpected, the first few of each, and
which wrappers and prefixes were tried), before any feature is computed (plan/preflight.py
calls `check_fits` against the model's structure)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# dict keys under which training scripts keep the weights, tried in this order
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "teacher", "net")
# key prefixes that wrappers add (DataParallel, torch.compile, Lightning, DINO's heads)
PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
SHOWN = 3  # names of missing and unexpected keys a refusal shows


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit its architecture."""


def read(path: str) -> Any:
    """The object a checkpoint file holds (safetensors or torch.save, tensors only)."""
    import pickle

    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint {path}: cannot be read with torch.load(weights_only=True) ({first}). "
            "It holds Python objects besides tensors (a training script's args, for "
            "example); save its state_dict alone: torch.save(checkpoint['model'], 'weights.pt')."
        ) from None


def _is_state_dict(obj: Any) -> bool:
    import torch

    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def candidates(obj: Any) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """(how it was found, state_dict) for every reading of a checkpoint's object: itself,
    each wrapper key, each with every prefix that all its keys share stripped."""
    found: list[tuple[str, dict[str, torch.Tensor]]] = []
    roots = [("the file itself", obj)]
    if isinstance(obj, dict):
        roots += [(f"[{key!r}]", obj[key]) for key in WRAPPER_KEYS if key in obj]
    for where, state in roots:
        if not _is_state_dict(state):
            continue
        found.append((where, state))
        stripped, label = state, where
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if all(k.startswith(prefix) for k in stripped):
                    stripped = {k[len(prefix) :]: v for k, v in stripped.items()}
                    label = f"{label} without {prefix!r}"
                    found.append((label, stripped))
                    changed = True
    return found


def fit(obj: Any, expected: dict[str, tuple[int, ...]], path: str) -> dict[str, Any]:
    """The reading of a checkpoint that fits `expected` ({key: shape} of the model's
    state_dict) exactly; else CheckpointError with the closest reading's differences."""
    readings = candidates(obj)
    if not readings:
        keys = list(obj)[:SHOWN] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {path}: no state_dict found (top-level: {keys}; wrapper keys tried: "
            f"{', '.join(WRAPPER_KEYS)})."
        )
    best, best_score = None, None
    for where, state in readings:
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
        if not missing and not unexpected and not wrong:
            return state
        score = len(missing) + len(unexpected) + len(wrong)
        if best_score is None or score < best_score:
            best, best_score = (where, missing, unexpected, wrong), score
    where, missing, unexpected, wrong = best
    parts = [
        f"checkpoint {path} does not fit the architecture: read as {where}, "
        f"{len(missing)} missing key(s){_first(missing)}, "
        f"{len(unexpected)} unexpected key(s){_first(unexpected)}"
    ]
    if wrong:
        parts.append(f", {len(wrong)} of another shape{_first(wrong)}")
    parts.append(
        f". Tried: the file itself, wrapper keys {', '.join(WRAPPER_KEYS)}, prefixes "
        f"{', '.join(repr(p) for p in PREFIXES)}. Check `model` (and `source`) against "
        "what was trained."
    )
    raise CheckpointError("".join(parts))


def _first(keys: list[str]) -> str:
    if not keys:
        return ""
    more = ", ..." if len(keys) > SHOWN else ""
    return f" ({', '.join(keys[:SHOWN])}{more})"


def expected_keys(net: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_fits(net: nn.Module, path: str) -> None:
    """Refuse `path` unless one of its readings fits `net` (a meta-device structure is
    enough: only names and shapes are compared)."""
    fit(read(path), expected_keys(net), path)


def load(net: nn.Module, path: str) -> nn.Module:
    """Load the reading of the checkpoint at `path` that fits `net`, strictly."""
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder: give the weights file in it")
    state = fit(read(path), expected_keys(net), path)
    net.load_state_dict(state, strict=True)
    return net
