"""Find plugins, register them with pluggy, and gather what they provide.

Callers use `PluginHost` (tox 4's facade style): registries to look specs up,
one typed method per event, and `add_observer` for observers made at run time.
The pluggy manager is private; nothing outside this module calls hooks.
Plugins come from three places, in this order:
  1. the `graft.plugins` entry points (our built-ins are declared there too, so
     a stranger's plugin is found exactly like ours),
  2. modules named in the config's `plugins:` list,
  3. modules or `.py` files named in `GRAFT_PLUGINS` (comma-separated).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from graftflow.core import hookspecs
from graftflow.core.errors import PluginError
from graftflow.core.registry import Registry
from graftflow.core.specs import (
    AugmentationSpec,
    DataSource,
    Exporter,
    LossSpec,
    MethodSpec,
    ModelFamily,
    ModelStore,
    PretextTask,
    RunInfo,
    TaskSpec,
)

log = logging.getLogger("graft.plugins")

ENTRY_POINT_GROUP = "graft.plugins"
ENV_VAR = "GRAFT_PLUGINS"
ALLOW_VAR, DENY_VAR = "GRAFT_PLUGINS_ALLOW", "GRAFT_PLUGINS_DENY"
OWN_DISTRIBUTION = "graftflow"

# registration hook → (registry attribute, spec class, human label)
_REGISTRATIONS = {
    "graft_model_families": ("families", ModelFamily, "model family"),
    "graft_losses": ("losses", LossSpec, "loss"),
    "graft_data_sources": ("sources", DataSource, "data source"),
    "graft_augmentations": ("augmentations", AugmentationSpec, "augmentation"),
    "graft_pretext_tasks": ("pretexts", PretextTask, "pretext task"),
    "graft_exporters": ("exporters", Exporter, "exporter"),
    "graft_model_stores": ("model_stores", ModelStore, "model store"),
    "graft_finetune_methods": ("methods", MethodSpec, "fine-tuning method"),
    "graft_tasks": ("tasks", TaskSpec, "task"),
}
_EVENTS = ("graft_on_stage_start", "graft_on_stage_end", "graft_on_epoch_end", "graft_on_checkpoint")
RUN_TIME = "run time"  # the origin of observers added while running (progress displays), not loaded as plugins

# Observers every PluginHost made in this process registers (e.g. the CLI's terminal display, which must
# hear the stages that Prefect tasks run with hosts of their own): see `process_observer`.
_PROCESS_OBSERVERS: dict[str, Any] = {}


@contextmanager
def process_observer(observer: Any, name: str) -> Iterator[None]:
    """While the block runs, every PluginHost created in this process gets `observer` (its `graft_on_*`
    methods) as a run-time observer; a DDP stage's epochs reach it through `epoch_relayed`."""
    _PROCESS_OBSERVERS[name] = observer
    try:
        yield
    finally:
        _PROCESS_OBSERVERS.pop(name, None)


@dataclass(frozen=True)
class PluginOrigin:
    name: str
    origin: str  # "builtin", "entry point", "config", "GRAFT_PLUGINS"
    version: str


def _patterns(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _import_plugin(ref: str, where: str) -> ModuleType:
    """Import a dotted module name or a `.py` path; failures name the plugin and where it was asked for."""
    try:
        if ref.endswith(".py") or os.sep in ref:
            path = Path(ref).expanduser().resolve()
            if not path.is_file():
                raise PluginError(f"{where}: plugin file '{ref}' does not exist")
            mod_name = f"graft_plugin_{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"{where}: cannot load plugin file '{ref}'")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(ref)
    except PluginError:
        raise
    except Exception as exc:  # a plugin's own import error, reported as such
        raise PluginError(f"{where}: plugin '{ref}' failed to import: {type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=4)
def _entry_points(search_path: tuple[str, ...]) -> tuple[tuple[metadata.EntryPoint, str, str], ...]:
    """The `graft.plugins` entry points with their distribution's name and version.

    Reading every installed distribution's metadata takes tens of milliseconds, and
    every command, stage task and DDP rank makes a host: read once per `sys.path`. A
    distribution's name and version parse its METADATA file on every read, and all our
    built-ins share one distribution: each is read once, not twice per entry point.
    """
    found, named = [], {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if dist is None:
            found.append((ep, "?", "?"))
            continue
        key = str(getattr(dist, "_path", id(dist)))
        if key not in named:
            info = dist.metadata
            named[key] = (info["Name"] or "?", info["Version"] or "?")
        found.append((ep, *named[key]))
    return tuple(found)


class PluginHost:
    """All registered plugins and the registries they filled."""

    def __init__(
        self,
        config_plugins: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        use_entry_points: bool = True,
    ):
        env = os.environ if env is None else env
        self._allow = _patterns(env.get(ALLOW_VAR))
        self._deny = _patterns(env.get(DENY_VAR))
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.origins: dict[str, PluginOrigin] = {}
        if use_entry_points:
            self._load_entry_points()
        for ref in config_plugins:
            self._require_permitted(ref, "plugins")
            self._register(_import_plugin(ref, "plugins"), ref, "config")
        for ref in filter(None, (s.strip() for s in env.get(ENV_VAR, "").split(","))):
            self._require_permitted(ref, ENV_VAR)
            self._register(_import_plugin(ref, ENV_VAR), ref, ENV_VAR)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"invalid plugin: {exc}") from exc
        self.families: Registry[ModelFamily] = Registry("model_family", "model family")
        self.losses: Registry[LossSpec] = Registry("loss", "loss")
        self.sources: Registry[DataSource] = Registry("data_source", "data source")
        self.augmentations: Registry[AugmentationSpec] = Registry("augmentation", "augmentation")
        self.pretexts: Registry[PretextTask] = Registry("pretext", "pretext task")
        self.exporters: Registry[Exporter] = Registry("exporter", "exporter")
        self.model_stores: Registry[ModelStore] = Registry("model_store", "model store")
        self.methods: Registry[MethodSpec] = Registry("finetune_method", "fine-tuning method")
        self.tasks: Registry[TaskSpec] = Registry("task", "task")
        self._collect()
        for name, observer in list(_PROCESS_OBSERVERS.items()):
            self.add_observer(observer, name)

    # -- discovery -------------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep, dist_name, version in _entry_points(tuple(sys.path)):
            origin = "builtin" if dist_name == OWN_DISTRIBUTION else f"entry point ({dist_name})"
            if not self._permitted(ep.value):
                log.info("plugin '%s' (%s) not loaded: excluded by %s/%s", ep.value, origin, ALLOW_VAR, DENY_VAR)
                continue
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"entry point '{ep.name}' ({ep.value}) of {dist_name} failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            self._register(module, ep.value, origin, version)

    def _permitted(self, ref: str) -> bool:
        """Allow/deny lists match a plugin's module name (or .py file name) with shell wildcards."""
        names = {ref, Path(ref).stem} if ref.endswith(".py") else {ref}
        if self._deny and any(fnmatch(n, pat) for n in names for pat in self._deny):
            return False
        return not self._allow or any(fnmatch(n, pat) for n in names for pat in self._allow)

    def _require_permitted(self, ref: str, where: str) -> None:
        """A plugin the user asked for by name is an error when excluded; silence would hide it."""
        if not self._permitted(ref):
            raise PluginError(f"{where}: plugin '{ref}' is not allowed here ({ALLOW_VAR}/{DENY_VAR})")

    def _register(self, plugin: Any, name: str, origin: str, version: str | None = None) -> None:
        name = getattr(plugin, "__name__", name)
        _check_contract(plugin, name, origin)
        if self._pm.get_plugin(name) is not None or self._pm.is_registered(plugin):
            return  # the same module named twice (entry point and config): one registration
        if version is None:
            version = str(getattr(plugin, "__version__", "-"))
        try:
            self._pm.register(plugin, name=name)
        except Exception as exc:
            raise PluginError(f"plugin '{name}' ({origin}) cannot be registered: {exc}") from exc
        self.origins[name] = PluginOrigin(name, origin, version)

    def _collect(self) -> None:
        for hook_name, (attr, spec_cls, _label) in _REGISTRATIONS.items():
            registry: Registry = getattr(self, attr)
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():  # registration order
                plugin = impl.plugin_name
                try:
                    specs = impl.function() or []
                except Exception as exc:
                    raise PluginError(f"plugin '{plugin}' failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
                for spec in specs:
                    if not isinstance(spec, spec_cls):
                        got, expected = type(spec).__name__, spec_cls.__name__
                        raise PluginError(f"plugin '{plugin}' returned {got} from {hook_name}; expected {expected}")
                    registry.add(spec, plugin, self.origins[plugin].origin)

    # -- queries ---------------------------------------------------------------
    def registries(self) -> list[Registry]:
        return [getattr(self, attr) for attr, _, _ in _REGISTRATIONS.values()]

    def listing(self) -> list[dict[str, str]]:
        """Every registered item (and every observer plugin): kind, name, plugin, origin, version."""
        rows = []
        for registry in self.registries():
            for name, entry in registry.entries():
                origin = self.origins[entry.plugin]
                rows.append(
                    {
                        "kind": registry.kind,
                        "name": name,
                        "plugin": entry.plugin,
                        "origin": origin.origin,
                        "version": origin.version,
                    }
                )
        for plugin_name, origin in sorted(self.origins.items()):
            plugin = self._pm.get_plugin(plugin_name)
            hooks = [e for e in _EVENTS if hasattr(plugin, e)]
            if hooks:
                rows.append(
                    {
                        "kind": "observer",
                        "name": plugin_name,
                        "plugin": plugin_name,
                        "origin": origin.origin,
                        "version": origin.version,
                    }
                )
        return rows

    # -- events ----------------------------------------------------------------
    def add_observer(self, observer: Any, name: str) -> None:
        """Register an object whose `graft_on_*` methods observe this host's events (e.g. a progress display)."""
        self._register(observer, name, RUN_TIME, "-")

    def stage_started(self, run: RunInfo, stage: str) -> None:
        self._notify("graft_on_stage_start", run=run, stage=stage)

    def stage_ended(self, run: RunInfo, stage: str, status: str, seconds: float, outputs: Mapping[str, str]) -> None:
        self._notify("graft_on_stage_end", run=run, stage=stage, status=status, seconds=seconds, outputs=dict(outputs))

    def epoch_ended(self, run: RunInfo, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        self._notify("graft_on_epoch_end", run=run, stage=stage, epoch=epoch, metrics=dict(metrics))

    def epoch_relayed(self, run: RunInfo, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        """An epoch that ended in a DDP rank-0 process: only this process's run-time observers hear it
        here (plugins are loaded in that process too, and heard it there)."""
        self._notify("graft_on_epoch_end", run_time_only=True, run=run, stage=stage, epoch=epoch, metrics=dict(metrics))

    def checkpoint_written(self, run: RunInfo, stage: str, path: str, step: int) -> None:
        self._notify("graft_on_checkpoint", run=run, stage=stage, path=path, step=step)

    def _notify(self, event: str, run_time_only: bool = False, **kwargs: Any) -> None:
        """Call every observer of `event` in pluggy's order; one that raises is logged and skipped."""
        for impl in reversed(getattr(self._pm.hook, event).get_hookimpls()):
            if run_time_only and self.origins.get(impl.plugin_name, PluginOrigin("", "", "")).origin != RUN_TIME:
                continue
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                log.warning(
                    "observer plugin '%s' failed in %s and was skipped: %s: %s",
                    impl.plugin_name,
                    event,
                    type(exc).__name__,
                    exc,
                )


def _check_contract(plugin: Any, name: str, origin: str) -> None:
    """A plugin that says which contract major it was written for (`graft_contract = N`) must match ours."""
    wanted = getattr(plugin, "graft_contract", None)
    if wanted is None:
        return
    major = hookspecs.CONTRACT_VERSION[0]
    try:
        ok = int(str(wanted).split(".")[0]) == major
    except ValueError:
        ok = False
    if not ok:
        version = ".".join(map(str, hookspecs.CONTRACT_VERSION))
        raise PluginError(
            f"plugin '{name}' ({origin}) was written for plugin contract {wanted}; this graftflow "
            f"implements contract {version}: update the plugin or graftflow"
        )
