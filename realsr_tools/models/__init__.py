"""Model registry and checkpoints.

``create_model(name, scale, **overrides)`` builds a registered variant; ``None`` overrides are dropped so unset
CLI options keep the variant's defaults. Checkpoints are plain dicts of tensors and JSON-able metadata, loaded with
``torch.load(weights_only=True)``: model name, options, scale, weights and training metadata.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

CHECKPOINT_FORMAT = 1
_REGISTRY: dict[str, Callable[..., Any]] = {}
_DEFAULTS: dict[str, dict[str, Any]] = {}


def register_model(name: str, **defaults: Any) -> Callable:
    """Register a factory ``fn(scale, **options)`` under ``name`` with its default options."""

    def decorate(factory: Callable) -> Callable:
        _REGISTRY[name] = factory
        _DEFAULTS[name] = defaults
        return factory

    return decorate


def list_models() -> dict[str, dict[str, Any]]:
    """Registered model names and their default options."""
    _load_builtin()
    return {name: dict(_DEFAULTS[name]) for name in sorted(_REGISTRY)}


def model_options(name: str, **overrides: Any) -> dict[str, Any]:
    """The variant's defaults updated with the non-``None`` overrides."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    unknown = set(overrides) - set(_DEFAULTS[name])
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {', '.join(sorted(unknown))}; it takes "
                          f"{', '.join(sorted(_DEFAULTS[name]))}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    for key, smallest in (("channels", 1), ("blocks", 0)):
        value = chosen.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < smallest):
            raise ConfigError(f"--{key} must be an integer >= {smallest}, got {value!r}")
    return _DEFAULTS[name] | chosen


def create_model(name: str, scale: int, **overrides: Any):
    """Build model ``name`` for ``scale`` (2, 3 or 4)."""
    if scale not in (2, 3, 4):
        raise ConfigError(f"scale must be 2, 3 or 4, got {scale}")
    options = model_options(name, **overrides)
    return _REGISTRY[name](scale, **options)


def _load_builtin() -> None:
    if not _REGISTRY:
        importlib.import_module(".zoo", __name__)  # imported for its effect: it registers the bundled variants


@dataclass
class LoadedModel:
    model: Any
    name: str
    scale: int
    options: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def checkpoint_dict(model, *, name: str, scale: int, options: dict[str, Any], meta: dict[str, Any] | None = None,
                    state_dict: dict | None = None) -> dict[str, Any]:
    """The on-disk form of a model: weights plus everything needed to rebuild it."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": name,
        "scale": int(scale),
        "options": dict(options),
        "state_dict": state_dict if state_dict is not None else model.state_dict(),
        "meta": dict(meta or {}),
    }


def load_checkpoint(path: str | Path, *, scale: int | None = None, name: str | None = None,
                    map_location: str = "cpu") -> LoadedModel:
    """Load a realsr checkpoint safely (``weights_only``), refusing another scale or architecture than asked."""
    import torch

    path = Path(path)
    if path.is_dir():  # a run folder: its best checkpoint
        if not (path / "best.pt").is_file():
            raise ConfigError(f"{path}: a folder without best.pt; pass a checkpoint file (RUN/best.pt or "
                              "RUN/last.pt of a realsr train run)")
        path = path / "best.pt"
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError) for bad files
        # Not torch's advice to retry with weights_only=False: that would run code from an unknown file.
        raise ConfigError(f"{path}: not a realsr checkpoint (torch cannot read it as plain tensors and metadata: "
                          f"{type(exc).__name__}); train one with `realsr train`") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT or "state_dict" not in data:
        data = _from_basicsr(data, path)
    if scale is not None and data["scale"] != scale:
        raise ConfigError(f"{path}: checkpoint is for x{data['scale']}, but x{scale} was asked for")
    if name is not None and data["model"] != name:
        raise ConfigError(f"{path}: checkpoint holds model {data['model']!r}, not {name!r}")
    model = create_model(data["model"], data["scale"], **data["options"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not fit model {data['model']!r} with options {data['options']} "
                          f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return LoadedModel(model, data["model"], data["scale"], data["options"], data.get("meta", {}))


def _from_basicsr(data: Any, path: Path) -> dict[str, Any]:
    """A BasicSR checkpoint (EDSR/RCAN weights under ``params_ema``/``params``) in realsr's checkpoint form."""
    from .basicsr import EXPECTED, basicsr_state_dict, detect_basicsr

    found = basicsr_state_dict(data)
    if found is None:
        keys = ", ".join(list(data)[:5]) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{path}: not a checkpoint realsr can load: expected a realsr checkpoint (format "
                          f"{CHECKPOINT_FORMAT}, from `realsr train`) or {EXPECTED}; found {keys or 'nothing'}")
    state, param_key = found
    try:
        name, scale, options = detect_basicsr(state)
    except ValueError as exc:
        raise ConfigError(f"{path}: weights under {param_key!r} are not {EXPECTED}: {exc}") from None
    return {"format": CHECKPOINT_FORMAT, "model": name, "scale": scale, "options": options, "state_dict": state,
            "meta": {"source": "basicsr", "param_key": param_key}}
