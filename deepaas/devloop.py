"""``deepaas-run --reload``: a changed plugin file reloads its model.

A background task (owned by the :class:`~deepaas.server.Server`, stopped
with it) reads the times and sizes of the plugins' source files every
:data:`POLL_S` seconds, in the default executor (never on the event loop):
the plugin file (``deepaas-run model.py``), or the ``.py`` files of the top-
level package of the plugin's module (:func:`deepaas.model.sources.
watch_roots`). When a model's files change and then stay unchanged for
:data:`SETTLE_S` (an editor writes a file in steps), the model is reloaded:

1. On a daemon thread of its own (an import that hangs must not hold up
   the server's exit), its modules are dropped from ``sys.modules``, the
   plugin is imported and wrapped again (introspection only, as at start),
   and the API's new view of it is built: its metadata document, its
   arguments and their parsers, both API documents
   (:meth:`~deepaas.api.views.ModelViews.prepare`).
2. A plugin that no longer imports, or whose view cannot be built (its
   ``get_metadata()`` raises, its arguments are unusable), is logged with
   the file and line, and the last good version keeps serving: API and
   workers alike. Fixing the file reloads again. A worker that must
   restart meanwhile (it crashed) imports the file as it is: the model's
   503 then says that the plugin is broken, and since when
   (:meth:`~deepaas.engine.runtime.ModelRuntime.files_broken`).
3. Else the new view is served at once (committed on the event loop), and
   the model's workers are replaced one at a time, each warmed before the
   old one retires (:meth:`~deepaas.engine.runtime.ModelRuntime.reload`).

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
from collections.abc import Callable, Mapping, Sequence

from deepaas.api.views import ModelViews, RefreshError, describe
from deepaas.engine.reload import EDITED
from deepaas.engine.runtime import ModelRuntime
from deepaas.model import loading, sources
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.tasks import on_daemon_thread

LOG = logging.getLogger("deepaas")

POLL_S = 0.5  # how often the files are read
SETTLE_S = 0.1  # how long changed files must stay unchanged before a reload
SETTLE_MAX_S = 2.0  # reload anyway after files changed for this long
SLOW_LOAD_S = 10.0  # a new version still loading this long is said in the log


def _reimport(spec: loading.PluginSpec) -> ModelWrapper:
    """On the reload's thread: import the plugin afresh (its modules forgotten)."""
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
        try:
            # On a thread of its own, not the default executor: an import
            # that hangs must not hold up the server's exit (SIGTERM).
            loading_it = asyncio.wrap_future(
                on_daemon_thread(lambda: self._prepare(spec), "deepaas-reload")
            )
            done, _ = await asyncio.wait({loading_it}, timeout=SLOW_LOAD_S)
            if not done:  # an import that hangs (a lock, a download...)
                LOG.warning(
                    "model %s: the new version is still loading after %gs; the "
                    "last good version keeps serving, and later saves wait for "
                    "this load to end",
                    spec.name,
                    SLOW_LOAD_S,
                )
            commit = await loading_it
        except loading.PluginLoadError as exc:
            self._failed(spec.name, str(exc), exc.causes)
            return
        except Exception as exc:  # the wrapper or the view could not be built
            self._failed(spec.name, _unusable(spec, exc), (exc,))
            return
        commit()  # on the event loop: a request sees the old view or the new
        self.reloads += 1
        runtime = self.runtimes.get(spec.name)
        if runtime is not None:
            runtime.reload(f"{what} changed", EDITED)
        LOG.info(
            "model %s: reloaded (metadata, arguments, API documents); "
            "replacing its workers",
            spec.name,
        )

    def _prepare(self, spec: loading.PluginSpec) -> Callable[[], None]:
        """On the reload's thread: import the plugin afresh and build its view
        (metadata, arguments, API documents); the commit that serves it."""
        return self.views.prepare(spec.name, _reimport(spec))

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
        runtime = self.runtimes.get(name)
        if runtime is not None:  # a worker that must restart meanwhile says so
            runtime.files_broken()


def _unusable(spec: loading.PluginSpec, exc: Exception) -> str:
    """Why the new version cannot be served, as a failed import is told:
    ``cannot load model 'm' (plugin /abs/m.py): get_metadata() failed:
    ValueError: ..., at /abs/m.py:7``."""
    root: BaseException = exc  # the plugin's own exception, for its line
    while root.__cause__ is not None:
        root = root.__cause__
    location = loading.where(root, spec.target)
    text = str(exc) if isinstance(exc, RefreshError) else describe(exc)
    suffix = f", at {location}" if location else ""
    return (
        f"cannot load model {spec.name!r} ({spec.origin} {spec.target}): {text}{suffix}"
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
