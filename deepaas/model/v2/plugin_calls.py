"""Calling a plugin's introspection methods in the API process, safely.

``get_metadata()``, ``get_predict_args()``, ``get_train_args()`` and
``get_infer_signature()`` run in the server itself (``get_metadata()`` at
each request for a model's document), not in a worker. Plugin code there
must not be able to end or hijack the server, so :func:`call_optional`:

- turns ``SystemExit`` (``sys.exit()``, an ``argparse`` error) into
  :class:`PluginExited` and any other ``BaseException`` that is no
  ``Exception`` (``KeyboardInterrupt``, ``GeneratorExit``, a class of the
  plugin's own) into :class:`PluginInterrupted`: the plugin's error, with
  its traceback, answered as one;
- puts back the handlers of SIGINT and SIGTERM that the call replaced (a
  framework set up lazily may ignore them), so that SIGTERM still stops
  the server, with a warning naming the method.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

#: The signals that stop the server: plugin code it calls must not take them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def call_optional(
    model: str, method: str, func: Callable[[], Any] | None, default: Any
) -> Any:
    """``func()``, the plugin's ``method`` of ``model``; ``default`` when the
    plugin has none (``func`` None) or it raises ``NotImplementedError``.

    Raises :class:`PluginExited` or :class:`PluginInterrupted` for what
    would end the server; an ``Exception`` of the plugin's passes as it is.
    """
    if func is None:
        return default
    handlers = [signal.getsignal(sig) for sig in STOP_SIGNALS]
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
    finally:
        _keep_stop_signals(model, method, handlers)


def _keep_stop_signals(model: str, method: str, handlers: list[Any]) -> None:
    """Put back the handlers of SIGINT and SIGTERM that ``method`` replaced:
    in the API process, SIGTERM would no longer stop the server."""
    if threading.current_thread() is not threading.main_thread():
        return  # no handler can have been set here
    for sig, handler in zip(STOP_SIGNALS, handlers, strict=True):
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)
            LOG.warning(
                "model %s: %s() replaced the handler of %s; it is put back "
                "(the server stops on it)",
                model,
                method,
                signal.Signals(sig).name,
            )
