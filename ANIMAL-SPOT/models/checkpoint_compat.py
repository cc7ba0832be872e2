"""Checkpoints written by other versions, made fit to resume here.

Weights load by name, but an optimizer's state is stored by parameter *position*, so a
checkpoint resumes only if its parameter order is known. Three layouts exist besides
this version's (which is the original's order, ``shortcut`` first in each block):

* the original ANIMAL-SPOT: the same order as ours now;
* this project before ``formatVersion`` 2: each block's ``shortcut`` after its
  ``conv``/``bn`` layers (told apart from the original's by the state's tensor shapes);
* the seed fork's ConvNeXt: the encoder holds the whole torchvision network as
  ``backbone`` and aliases its ``features``; its optimizer covers the unused
  ``backbone.classifier`` (final LayerNorm and 1000-class layer) after the features.

``adapt_checkpoint`` rewrites a loaded checkpoint into this version's layout.
"""

import re
from typing import Dict, List, Optional

import torch
import torch.nn as nn

SEED_PREFIX = "encoder.backbone."


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model; the message says why."""


def is_seed_checkpoint(model_state: dict) -> bool:
    return any(k.startswith(SEED_PREFIX + "features.") for k in model_state)


def seed_model_state(model_state: dict) -> dict:
    """The seed's weights under our names (its ``encoder.features.*`` aliases), without
    the unused ``backbone.classifier``."""
    state = {k: v for k, v in model_state.items() if not k.startswith(SEED_PREFIX)}
    for key, value in model_state.items():   # files that kept only the backbone.* copies
        if key.startswith(SEED_PREFIX + "features."):
            state.setdefault("encoder." + key[len(SEED_PREFIX):], value)
    return state


def _seed_name(name: str) -> Optional[str]:
    if name.startswith(SEED_PREFIX + "features."):
        return "encoder." + name[len(SEED_PREFIX):]
    if name.startswith(SEED_PREFIX):
        return None                               # backbone.classifier: not in our network
    return name


def legacy_order(names: List[str]) -> List[str]:
    """This project's order before formatVersion 2: in each residual block, the
    ``shortcut`` parameters after the block's other parameters."""
    block = re.compile(r"^(encoder\.layer\d+\.\d+\.)(shortcut\.)?")
    out, current, rest, shortcut = [], None, [], []
    for name in names + [None]:
        match = block.match(name) if name else None
        prefix = match.group(1) if match else None
        if prefix != current:
            out += rest + shortcut
            rest, shortcut, current = [], [], prefix
        if name is None:
            break
        if match and match.group(2):
            shortcut.append(name)
        elif prefix:
            rest.append(name)
        else:
            out.append(name)
    return out


def _fits(opt_state: dict, order: List[Optional[str]], params: Dict[str, torch.Tensor]) -> bool:
    states = opt_state.get("state", {})
    if len(order) != sum(len(g["params"]) for g in opt_state.get("param_groups", [])):
        return False
    for position, name in enumerate(order):
        entry = states.get(position)
        if entry is None or name is None:
            continue
        moment = entry.get("exp_avg", entry.get("momentum_buffer"))
        if moment is not None and name in params and tuple(moment.shape) != tuple(params[name].shape):
            return False
    return True


def reorder_optimizer_state(opt_state: dict, order: List[Optional[str]], model: nn.Module) -> dict:
    """The optimizer state with positions following ``model.named_parameters()``;
    ``order`` names the parameter at each saved position (None: not in our model)."""
    names = [name for name, _ in model.named_parameters()]
    position = {name: i for i, name in enumerate(names)}
    states = {}
    for saved, name in enumerate(order):
        if name is not None and saved in opt_state.get("state", {}):
            states[position[name]] = opt_state["state"][saved]
    groups = [dict(opt_state["param_groups"][0], params=list(range(len(names))))]
    return {"state": states, "param_groups": groups}


def adapt_checkpoint(checkpoint: dict, model: nn.Module, path: str = "checkpoint",
                     optimizer: Optional[torch.optim.Optimizer] = None) -> dict:
    """``checkpoint`` (loaded) in this version's layout for ``model``: seed weights
    renamed, optimizer state in our parameter order. ``optimizer`` (the run's) says the
    order its groups hold (``--freeze_backbone``: the head's alone; ``--backbone_lr``: the
    head's, then the encoder's); without it, the model's. Raises CheckpointError when the
    optimizer state fits no known order."""
    train_state = dict(checkpoint["trainState"])
    params = dict(model.named_parameters())
    names = list(params)
    if optimizer is not None:
        name_of = {id(parameter): name for name, parameter in params.items()}
        names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    if is_seed_checkpoint(checkpoint["modelState"]):
        saved = [n for n in checkpoint["modelState"] if n.startswith(SEED_PREFIX)]
        saved += [n for n in checkpoint["modelState"] if n.startswith("classifier.")]
        candidates = [[_seed_name(n) for n in saved]]
        checkpoint = dict(checkpoint, modelState=seed_model_state(checkpoint["modelState"]))
        if isinstance(train_state.get("best_model"), dict) and is_seed_checkpoint(train_state["best_model"]):
            train_state["best_model"] = seed_model_state(train_state["best_model"])
    else:
        candidates = [names, legacy_order(list(params))]
    opt_state = train_state.get("optState")
    if opt_state and opt_state.get("param_groups"):
        for order in candidates:
            if _fits(opt_state, order, params):
                if order != names:
                    train_state["optState"] = reorder_optimizer_state(opt_state, order, model)
                break
        else:
            raise CheckpointError(f"{path}: its optimizer state fits no known parameter order of this model "
                                  "(another backbone or size?)")
    return dict(checkpoint, trainState=train_state)
