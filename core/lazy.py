"""`lazy_module(name)`: a module that is imported on first use, for plugins that register cheaply.

Every command loads every plugin to check a config (`graft run` on a typo must name it in
under a second, issue 19), and importing torch, torchvision or timm takes seconds. A plugin
module therefore binds its heavy imports with `torch = lazy_module("torch")`: the name
works as the module does (`torch.zeros`, `v2.RandomHorizontalFlip`), and the import happens
on the first attribute read — when an op, a loss or a model is built, never at registration.

The proxy is not put in `sys.modules` (unlike `importlib.util.LazyLoader`), so whether
torch was imported stays a fact others can test (`"torch" in sys.modules`), and a failing
import raises where the module is first used, with the module's own error.
Classes that subclass a heavy base (`nn.Module`) cannot be lazy this way: they live in a
private sibling module (`plugins/losses/_classification.py`) that the factories import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """Stands in for module `__name__` until an attribute is read; then forwards to the real one."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):  # copy, pickle and doctest probe these
            raise AttributeError(attr)
        module = importlib.import_module(self.__name__)
        value = getattr(module, attr)
        self.__dict__[attr] = value  # later reads are plain attribute lookups
        return value

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))

    def __repr__(self) -> str:
        return f"<lazy module '{self.__name__}'>"


def lazy_module(name: str) -> ModuleType:
    """Module `name`, imported when one of its attributes is first read (an absolute dotted name)."""
    return _LazyModule(name)


def deferred(module: str, attr: str) -> Callable[..., Any]:
    """A callable that imports `module` on its first call and calls its `attr`: a factory that
    registers now and costs its import only when something is built."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"{module}.{attr}, imported when called."
    return call


def forward_to(module: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) that finds `names` in `module`, imported when one is first asked for.

    A plugin module whose torch code moved to a private sibling keeps answering
    `from graftflow.plugins.losses.classification import FocalLoss` this way. Only the listed
    names are forwarded: the plugin host probes modules for optional attributes
    (`graft_contract`), and those must stay absent, not import torch.
    """
    forwarded = frozenset(names)

    def __getattr__(attr: str) -> Any:
        if attr not in forwarded:
            raise AttributeError(f"module has no attribute '{attr}'")
        return getattr(importlib.import_module(module), attr)

    return __getattr__
