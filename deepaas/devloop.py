"""``deepaas-run --reload``: a changed plugin file reloads its model.

A background task (owned by the :class:`~deepaas.server.Server`, stopped
with it) reads the times and sizes of the plugins' source files every
:data:`POLL_S` seconds, in the default executor (never on the event loop):
the plugin file (``deepaas-run model.py``), or the ``.py`` files of the top-
level package of the plugin's module (:func:`deepaas.model.sources.
watch_roots`). When a model's files change and then stay unchanged for
:data:`SETTLE_S` (an editor writes a file in steps), the model is reloaded:

1. In the executor, its modules are dropped from ``sys.modules`` and the
   plugin is imported and wrapped again (introspection only, as at start).
2. A plugin that no longer imports (or whose arguments are unusable) is
   logged with the file and line, and the last good version keeps serving:
   API and workers alike. Fixing the file reloads again.
3. Else the API's view of the model is replaced at once (metadata,
   arguments and their parsers, the operations of the API documents:
   :mod:`deepaas.api.views`), and its workers are replaced one at a time,
   each warmed before the old one retires
   (:meth:`~deepaas.engine.runtime.ModelRuntime.reload`).

Not watched: modules outside the plugin's package (a library it imports, a
helper module beside a plugin file: touch the plugin file to reload it);
a new entry point, a new model, a new batching policy or a changed worker
count need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence

from deepaas.api.views import ModelViews
from deepaas.engine.runtime import ModelRuntime
from deepaas.model import loading, sources
from deepaas.model.v2.wrapper import ModelWrapper

LOG = logging.getLogger("deepaas")

POLL_S = 0.5  # how often the files are read
SETTLE_S = 0.1  # how long changed files must stay unchanged before a reload
SETTLE_MAX_S = 2.0  # reload anyway after files changed for this long


def _reimport(spec: loading.PluginSpec) -> ModelWrapper:
    """In the executor: import the plugin afresh (its modules forgotten)."""
    sources.forget(spec.target)
    return loading.load(spec)


class PluginWatcher:
    """Watches the served plugins' files and reloads the models that changed."""

    def __init__(
        self,
        specs: Sequence[loading.PluginSpec],
        views: ModelViews,
        runtimes: Mapping[str, ModelRuntime],
        *,
        debug: bool = False,
    ) -> None:
        self.specs = list(specs)
        self.views = views
        self.runtimes = runtimes
        self.debug = debug
        # Roots are found now, while the plugins are imported (a broken
        # reload leaves a module out of sys.modules).
        self.roots = {spec.name: sources.watch_roots(spec.target) for spec in specs}
        self.reloads = 0  # successful reloads (tests, logs)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the files as they are now (before the server says it is
        ready: a change after that reloads), then watch them."""
        for spec in self.specs:
            LOG.info(
                "--reload: model %s reloads when these change: %s",
                spec.name,
                ", ".join(self.roots[spec.name]) or "nothing found to watch",
            )
        seen = await self._scan()
        self._task = asyncio.ensure_future(self._run(seen))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _scan(self) -> dict[str, dict[str, tuple[int, int]]]:
        loop = asyncio.get_running_loop()
        roots = self.roots
        return await loop.run_in_executor(
            None, lambda: {name: sources.scan(r) for name, r in roots.items()}
        )

    async def _run(self, seen: dict[str, dict[str, tuple[int, int]]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_S)
            now = await self._scan()
            if now == seen:
                continue
            began = loop.time()  # wait until the writes are over
            while loop.time() - began < SETTLE_MAX_S:
                await asyncio.sleep(SETTLE_S)
                later = await self._scan()
                if later == now:
                    break
                now = later
            for spec in self.specs:
                if now[spec.name] != seen[spec.name]:
                    changed = _changed(seen[spec.name], now[spec.name])
                    try:
                        await self._reload(spec, changed)
                    except Exception:  # never end the watch
                        LOG.exception("model %s: reload failed", spec.name)
            seen = now

    async def _reload(self, spec: loading.PluginSpec, changed: list[str]) -> None:
        what = ", ".join(os.path.basename(path) for path in changed) or "its files"
        LOG.info("model %s: %s changed, reloading", spec.name, what)
        loop = asyncio.get_running_loop()
        try:
            wrapper = await loop.run_in_executor(None, _reimport, spec)
        except loading.PluginLoadError as exc:
            self._failed(spec.name, str(exc), exc.causes)
            return
        try:
            self.views.refresh(spec.name, wrapper)
        except Exception as exc:
            self._failed(spec.name, f"{type(exc).__name__}: {exc}", (exc,))
            return
        self.reloads += 1
        runtime = self.runtimes.get(spec.name)
        if runtime is not None:
            runtime.reload(f"{what} changed")
        LOG.info(
            "model %s: reloaded (metadata, arguments, API documents); "
            "replacing its workers",
            spec.name,
        )

    def _failed(
        self, name: str, why: str, causes: Sequence[BaseException] = ()
    ) -> None:
        LOG.error(
            "model %s: reload failed, the last good version keeps serving "
            "(fix the file to reload again): %s",
            name,
            why,
            exc_info=causes[0] if self.debug and causes else None,
        )


def _changed(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> list[str]:
    """The files added, removed or changed."""
    return sorted(
        path
        for path in before.keys() | after.keys()
        if before.get(path) != after.get(path)
    )
