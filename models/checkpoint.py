"""Checkpoint reading, writing and strict loading shared by the model classes.

Two formats are read:

* the project's own: ``{"model": state_dict, "config": asdict(cfg), "step": n, ...}``;
* a published file: a bare state dict whose keys all carry one prefix (``audnet.`` for
  ``sound2scene.pth``, ``module.`` for SwAV), optionally wrapped as ``{"state_dict": ...}``.

Everything is loaded with ``torch.load(weights_only=True)``. Loading is strict: every key present,
none extra, every shape equal; otherwise :class:`CheckpointMismatchError` names the keys and shapes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, Type, TypeVar

import torch
from torch import Tensor, nn

C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)
Source = str | os.PathLike | Mapping[str, Any]

_MAX_LISTED = 12
log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes differ from the model it is loaded into."""


class CheckpointReadError(ValueError):
    """A checkpoint file that torch cannot read: empty, truncated or not a torch file."""


def load_file(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a file torch cannot parse raises :class:`CheckpointReadError`
    (one sentence naming the file) instead of whatever the parser hit (EOFError, RuntimeError, KeyError...);
    OSErrors (missing file, a directory) pass through."""
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except OSError:  # missing, a directory, no permission: the caller's own message
        raise
    except Exception as exc:  # noqa: BLE001  parsing garbage can raise anything (EOFError, KeyError, UnpicklingError...)
        text = str(exc).strip()
        what = type(exc).__name__ + (": " + text.splitlines()[0].split(". ")[0] if text else "")
        raise CheckpointReadError(f"cannot read {path} as a checkpoint (empty, truncated or not a torch file: "
                                  f"{what})") from None


def read_resume(path: str | os.PathLike | None) -> Any:
    """A training run's resume state at ``path``; None when there is none or it cannot be read (logged: the
    run starts over, since a resume file is only a shortcut)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return load_file(path)
    except CheckpointReadError as exc:
        log.warning("ignoring the resume state: %s; starting over", exc)
        return None


def read_checkpoint(src: Source, *, map_location: str | torch.device = "cpu") -> Mapping[str, Any]:
    """Return the object stored at ``src`` (a path), or ``src`` itself when it is already a mapping."""
    if isinstance(src, Mapping):
        return src
    return load_file(src, map_location=map_location)


def is_own_format(obj: Mapping[str, Any]) -> bool:
    """True for ``{"model": state_dict, "config": {...}, ...}``."""
    return isinstance(obj.get("model"), Mapping) and isinstance(obj.get("config"), Mapping)


def make_checkpoint(model: nn.Module, config: Any, *, step: int, **extra: Any) -> dict[str, Any]:
    """The own-format dict for ``model`` built from the dataclass ``config``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"model": state, "config": dataclasses.asdict(config), "step": int(step), **extra}


def save_file(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically (temporary name, then rename): a run killed while saving leaves the
    previous file, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: Any, *, step: int,
                    **extra: Any) -> None:
    """Write the own-format checkpoint atomically (:func:`save_file`)."""
    save_file(make_checkpoint(model, config, step=step, **extra), path)


def config_from_dict(config_cls: Type[C], values: Mapping[str, Any]) -> C:
    """Build ``config_cls`` from a stored dict; unknown field names are an error."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CheckpointMismatchError(
            f"checkpoint config has fields {unknown} that {config_cls.__name__} does not know")
    return config_cls(**values)


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def mismatches(expected: Mapping[str, Tensor], state: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between a model's state dict and a checkpoint's (prefixed) keys."""
    problems = []
    for ckey, value in state.items():
        key = ckey[len(prefix):] if ckey.startswith(prefix) else None
        if key is None or key not in expected:
            shape = f" (checkpoint shape {_shape(value)})" if isinstance(value, Tensor) else ""
            problems.append(f"unexpected key {ckey!r}{shape}")
        elif not isinstance(value, Tensor):
            problems.append(f"key {ckey!r} holds {type(value).__name__}, not a tensor")
        elif value.shape != expected[key].shape:
            problems.append(f"key {ckey!r}: checkpoint shape {_shape(value)} "
                            f"!= model shape {_shape(expected[key])}")
    problems += [f"missing key {prefix + k!r} (model shape {_shape(v)})"
                 for k, v in expected.items() if prefix + k not in state]
    return problems


def load_state_strict(module: M, state: Mapping[str, Any], *, prefix: str = "", source: str = "checkpoint") -> M:
    """Load ``state`` (keys = ``prefix`` + the module's keys) strictly into ``module``; return ``module``.

    Raises:
        CheckpointMismatchError: naming each missing, unexpected or mis-shaped key with its shapes.
    """
    problems = mismatches(module.state_dict(), state, prefix)
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED])
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CheckpointMismatchError(
            f"{source} does not match {type(module).__name__}: {shown}{more}")
    module.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
    return module


def load_model(model_cls: Type[M], config_cls: Type[C], src: Source, *, official_prefix: str,
               config: C | None = None, map_location: str | torch.device = "cpu") -> M:
    """Build and strictly load ``model_cls`` from an own-format or a published checkpoint.

    Args:
        model_cls: called as ``model_cls(config)``.
        config_cls: the model's config dataclass.
        src: a path or an already-read checkpoint mapping.
        official_prefix: key prefix of the published file (``"audnet."``, ``"module."``).
        config: config for a published file (default: ``config_cls()``, the paper size); for an
            own-format file the stored config is used and this must be None or equal to it.
    """
    obj = read_checkpoint(src, map_location=map_location)
    name = str(src) if not isinstance(src, Mapping) else "checkpoint"
    if is_own_format(obj):
        stored = config_from_dict(config_cls, obj["config"])
        if config is not None and config != stored:
            raise CheckpointMismatchError(f"{name} was saved with {stored}, not {config}")
        model = model_cls(stored)
        load_state_strict(model, obj["model"], source=name)
    else:
        state = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), Mapping) else obj
        model = model_cls(config if config is not None else config_cls())
        load_state_strict(model, state, prefix=official_prefix, source=name)
    return model


class FromCheckpoint:
    """Mixin giving a model class ``from_checkpoint`` through :func:`load_model`.

    The class sets ``config_cls`` (its config dataclass, also its constructor's one argument) and
    ``official_prefix`` (the key prefix of the published file).
    """

    config_cls: ClassVar[type]
    official_prefix: ClassVar[str]

    @classmethod
    def from_checkpoint(cls, src: Source, *, config: Any = None,
                        map_location: str | torch.device = "cpu") -> Any:
        """Load an own-format checkpoint or the published file, strictly.

        Raises:
            CheckpointMismatchError: a key is missing, extra or has another shape (all named).
        """
        return load_model(cls, cls.config_cls, src, official_prefix=cls.official_prefix,
                          config=config, map_location=map_location)
