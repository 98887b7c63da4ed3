"""Calling a plugin's introspection methods in the API process, safely.

``get_metadata()``, ``get_predict_args()``, ``get_train_args()`` and
``get_infer_signature()`` run in the server itself (``get_metadata()`` at
each request for a model's document), not in a worker. Plugin code there
must not be able to end the server, so :func:`call_optional` turns
``SystemExit`` (``sys.exit()``, an ``argparse`` error) into
:class:`PluginExited` and any other ``BaseException`` that is no
``Exception`` (``KeyboardInterrupt``, ``GeneratorExit``, a class of the
plugin's own) into :class:`PluginInterrupted`: the plugin's error, with
its traceback, answered as one.

Stop signals need no guard here: these methods run at load, before the
server installs its SIGINT/SIGTERM handlers (which then replace whatever
plugin code set), and afterwards only on threads of their own (the
metadata thread of :mod:`deepaas.api.v2.models`, the reload thread of
:mod:`deepaas.devloop`), where Python refuses to set a handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PluginExited(RuntimeError):
    """Plugin code raised ``SystemExit`` (``sys.exit()``, ``exit()``, an
    ``argparse`` error) where deepaas called it in the server, which would
    end the server: it is the plugin's error instead, with its traceback."""

    def __init__(self, where: str, exc: SystemExit) -> None:
        super().__init__(
            f"the plugin called sys.exit({exc.code!r}) {where}: plugin code "
            "must not exit the server (does it parse the command line when it "
            "is imported?)"
        )
        self.code = exc.code


class PluginInterrupted(RuntimeError):
    """Plugin code raised a ``BaseException`` that is no ``Exception``
    (``KeyboardInterrupt``, ``GeneratorExit``, a class of its own) where
    deepaas called it in the server, which would end the server (or, on the
    event loop, drop a request unanswered): it is the plugin's error
    instead, with its traceback."""

    def __init__(self, where: str, exc: BaseException) -> None:
        try:
            text = str(exc)
        except BaseException:  # a plugin's __str__ may raise anything
            text = ""
        said = f": {text}" if text else ""
        super().__init__(f"the plugin raised {type(exc).__name__} {where}{said}")


def call_optional(method: str, func: Callable[[], Any] | None, default: Any) -> Any:
    """``func()``, the plugin's ``method``; ``default`` when the
    plugin has none (``func`` None) or it raises ``NotImplementedError``.

    Raises :class:`PluginExited` or :class:`PluginInterrupted` for what
    would end the server; an ``Exception`` of the plugin's passes as it is.
    """
    if func is None:
        return default
    try:
        return func()
    except NotImplementedError:
        return default
    except SystemExit as exc:  # would end the server: the plugin's error
        raise PluginExited(f"in {method}()", exc).with_traceback(
            exc.__traceback__
        ) from None
    except Exception:
        raise
    except BaseException as exc:  # KeyboardInterrupt...: the plugin's error
        raise PluginInterrupted(f"in {method}()", exc).with_traceback(
            exc.__traceback__
        ) from None
