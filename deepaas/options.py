"""Every setting of ``deepaas-run``: its name, type, default and help.

One table (:data:`OPTIONS`) from which :mod:`deepaas.config` builds the
command line, reads the environment and the config file, and from which
``docs/gen_config_table.py`` writes docs/configuration.md: a setting added
here is documented and settable in all three ways at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: The largest batch (requests per ``predict_batch`` call) a plugin's
#: ``batching`` or ``--max-batch-size`` may ask for: the queue gathers a
#: batch from at most 256 waiting calls after the oldest one.
MAX_BATCH_SIZE = 256
#: The longest fixed batch window (``max_delay_ms``, ``--max-batch-delay``),
#: one minute: beyond any wait a client of a prediction accepts.
MAX_BATCH_DELAY_MS = 60_000
#: The longest wait of the shutdown and connection options (--drain-delay,
#: --shutdown-timeout, --client-timeout, --train-cancel-grace): one hour.
MAX_WAIT_S = 3600
#: The longest --predict-timeout: seven days, for a prediction that is a job.
MAX_PREDICT_TIMEOUT_S = 7 * 24 * 3600
#: The most processes one setting may start (--workers per model,
#: --max-trainings): a typo such as --workers 1000000 started processes
#: until the kernel killed the server for want of memory.
MAX_PROCESSES = 256


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its name (``listen_port``), type and documentation."""

    name: str
    default: Any
    help: str
    kind: str = "str"  # str | int | optional_int | float | bool | names | choice
    short: str | None = None
    choices: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # extra environment variables, lowest priority
    shown_default: str | None = None  # how --help and the docs show the default
    metavar: str = "NAME"  # how --help shows a value of a "names" option
    # False: environment and config file only (a secret: a flag would show
    # it to every user of the machine in the process list).
    cli: bool = True
    # The largest value accepted (a number option); the help says it too.
    # Every seconds-valued option has one: 1e308 would pass the "0 or more"
    # checks and then wait for ever (--drain-delay 1e308: SIGTERM never exits).
    maximum: int | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, text: str) -> Any:
        """Turn an environment or config-file string into a value."""
        if self.kind in ("int", "optional_int", "float"):
            return self._number(text)
        if self.kind == "bool":
            return _parse_bool(text)
        if self.kind == "names":
            return parse_names(text)
        if self.kind == "choice" and text.strip() not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {text!r}")
        return text.strip()

    def _number(self, text: str) -> int | float | None:
        """An int or float option's value; ValueError in words (not Python's
        ``invalid literal for int()``) when ``text`` is not one."""
        stripped = text.strip()
        if self.kind == "optional_int" and not stripped:
            return None
        try:
            return float(stripped) if self.kind == "float" else int(stripped)
        except ValueError:
            what = "a number" if self.kind == "float" else "a whole number"
            raise ValueError(f"expected {what}, got {text!r}") from None


OPTIONS: tuple[Option, ...] = (
    Option("listen_ip", "127.0.0.1", "IP address the API listens on."),
    Option("listen_port", 5000, "Port the API listens on.", kind="int"),
    Option(
        "base_path",
        "",
        "Prefix of every route, e.g. /my-model (must start with '/').",
    ),
    Option(
        "model_name",
        [],
        "Serve only these models (entry-point names). Repeat the flag or "
        "separate names with commas. Default: every installed model.",
        kind="names",
        env=("DEEPAAS_V2_MODEL",),
    ),
    Option(
        "plugin",
        [],
        "Serve a plugin that is not installed: a Python file "
        "(path/to/model.py[:Attribute]; a TARGET that ends in .py, holds a "
        "'/' or names an existing file is a file) or else a module "
        "(module[:Attribute], importable from the current folder); NAME= "
        "before it chooses its model name. Repeat the flag; plugins can also "
        "be given as arguments. Installed models are then served only if "
        "--model-name names them.",
        kind="names",
        shown_default="none",
        metavar="[NAME=]TARGET",
    ),
    Option(
        "model_repository",
        "",
        "Serve every model file in this folder with no code: .onnx, .pt/.pth "
        "(TorchScript), .pt2 (torch.export), .keras and SavedModel folders, "
        "each named after its file, with an optional NAME.toml beside it "
        "(docs/model-files.md). Installed models are then served only if "
        "--model-name names them.",
        shown_default="none",
    ),
    Option(
        "reload",
        False,
        "Development: watch the plugins' source files and, when one changes, "
        "reload the model (metadata, arguments, API documents, workers).",
        kind="bool",
    ),
    Option(
        "workers",
        1,
        "Worker processes per model, at most 256 (each holds its own copy "
        "of the model).",
        kind="int",
        short="-p",
        maximum=MAX_PROCESSES,
    ),
    Option(
        "devices",
        "auto",
        "Where workers run: auto (every GPU NVML reports, else the CPU), cpu, "
        "or a comma-separated list of GPU indices or UUIDs used as given.",
    ),
    Option(
        "max_batch_size",
        None,
        "Largest batch for models with predict_batch, 1 to 256 (1 disables "
        "batching); it may lower, not raise, a tensor-native plugin's infer "
        "rows (docs/batching.md).",
        kind="optional_int",
        shown_default="the plugin's batching, else 8",
    ),
    Option(
        "max_batch_delay",
        None,
        "Milliseconds a batch that is not full waits for more requests after "
        "its oldest one arrived, 0 to 60000 (0: never waits); overrides each "
        "model's own max_delay_ms. Without either, the adaptive window: it "
        "waits only while more requests are expected soon, at most 5 ms "
        "(docs/batching.md).",
        kind="optional_int",
        shown_default="adaptive",
    ),
    Option(
        "predict_timeout",
        0.0,
        "Seconds a prediction may take, 0 to 604800 (7 days; 0 = no limit); "
        "past it the request answers 504 and its worker is replaced.",
        kind="float",
        maximum=MAX_PREDICT_TIMEOUT_S,
    ),
    Option(
        "max_queue",
        0,
        "Requests that may wait per model (0 = no limit); more answer 503.",
        kind="int",
    ),
    Option(
        "worker_max_requests",
        0,
        "Replace a worker after it has answered about this many requests "
        "(0 = never); each worker gets up to a tenth more, so they do not all "
        "recycle at once.",
        kind="int",
    ),
    Option(
        "worker_max_memory",
        0,
        "Replace a worker whose resident memory passes this many MiB, checked "
        "between calls (0 = no limit).",
        kind="int",
    ),
    Option(
        "drain_delay",
        0.0,
        "Seconds, 0 to 3600, after SIGTERM/SIGINT during which readiness "
        "answers 503 (so "
        "load balancers and Kubernetes take the server out) while new requests "
        "are still served; then the --shutdown-timeout drain. Set it above the "
        "balancer's health-check interval times its fall count, or the time "
        "Kubernetes takes to remove the pod's endpoint. The process exits "
        "within --drain-delay + --shutdown-timeout + 5 s of the signal.",
        kind="float",
        maximum=MAX_WAIT_S,
    ),
    Option(
        "shutdown_timeout",
        30.0,
        "Seconds, 0 to 3600, requests in flight may take to finish after "
        "SIGTERM/SIGINT (after --drain-delay); then what is left is answered "
        "503 and the process exits within 5 s.",
        kind="float",
        maximum=MAX_WAIT_S,
    ),
    Option("warm", True, "Call each model's warm() in every worker.", kind="bool"),
    Option(
        "worker_start_timeout",
        1800.0,
        "Seconds a worker may take to import its model and run warm(), 0 to "
        "604800 (0 = no limit); past it the worker is killed, readiness and "
        "the model's requests say why (503), and it is started again with "
        "the backoff of a failed start.",
        kind="float",
        maximum=MAX_PREDICT_TIMEOUT_S,
    ),
    Option("train_endpoint", True, "Enable the training routes.", kind="bool"),
    Option(
        "state_dir",
        None,
        "Directory of the training records (SQLite) and logs; workers and "
        "trainings see it as $DEEPAAS_STATE_DIR, for what a model keeps. "
        "Default: the first writable of the user's state directory (e.g. "
        "~/.local/state/deepaas), $SCRATCH/deepaas/state and "
        "$TMPDIR/deepaas-state-<uid> (see docs/hpc.md). Set but empty: a "
        "start-up error.",
        shown_default="the user's state directory, else $SCRATCH, else $TMPDIR",
    ),
    Option(
        "max_trainings",
        1,
        "Trainings that may run at once, at most 256; more wait, status queued.",
        kind="int",
        maximum=MAX_PROCESSES,
    ),
    Option(
        "train_gpus",
        None,
        "GPUs a training gets when it does not say (deepaas_gpus). Default: 1 "
        "when GPUs are selected with --devices, else 0 (the CPU).",
        kind="optional_int",
        shown_default="1 with GPUs, else 0",
    ),
    Option(
        "train_cancel_grace",
        10.0,
        "Seconds, 0 to 3600, a cancelled training may take to exit after "
        "SIGTERM before it is killed with SIGKILL.",
        kind="float",
        maximum=MAX_WAIT_S,
    ),
    Option(
        "reload_after_train",
        True,
        "When a training of a model ends done, replace that model's predict "
        "workers one at a time, each warmed before the old one retires, so "
        "predictions use what the training saved.",
        kind="bool",
    ),
    Option("predict_endpoint", True, "Enable the predict routes.", kind="bool"),
    Option(
        "doc_endpoint",
        True,
        "Serve the Swagger UI at <base-path>/api.",
        kind="bool",
    ),
    Option(
        "debug_endpoint",
        False,
        "Serve captured log and worker output at <base-path>/v2/debug/.",
        kind="bool",
    ),
    Option(
        "client_max_size",
        0,
        "Largest request body in bytes (0 = unlimited). Larger bodies get 413.",
        kind="int",
    ),
    Option(
        "client_max_decoded_size",
        16 << 20,
        "Largest request body in bytes once decompressed (Content-Encoding), "
        "and largest JSON or urlencoded body, which is held in memory "
        "(0 = unlimited). Larger bodies get 413.",
        kind="int",
        shown_default="16777216 (16 MiB)",
    ),
    Option(
        "max_form_parts",
        1000,
        "Most parts (fields and files) a multipart or urlencoded form may have; "
        "more get 413.",
        kind="int",
    ),
    Option(
        "client_timeout",
        60.0,
        "Seconds, more than 0 and at most 3600, a client may take to send a "
        "request's headers, or between two pieces of its body; a slower "
        "client gets 408 and its connection is closed.",
        kind="float",
        maximum=MAX_WAIT_S,
    ),
    Option(
        "auth_token_file",
        None,
        "Require a token (Authorization: Bearer TOKEN) on every route but the "
        "probes and the API documents. The file holds one token per line, "
        "each optionally followed by the scopes it holds (predict, train, "
        "admin; comma-separated; none listed: all), or sha256:<hex> of the "
        "token instead of the token (docs/security.md).",
        shown_default="none: no token needed",
    ),
    Option(
        "auth_tokens",
        None,
        "Tokens as in --auth-token-file, entries separated by ';', added to "
        "the file's. No command-line flag: one would show them to every user "
        "of the machine.",
        shown_default="none",
        cli=False,
    ),
    Option(
        "metrics_public",
        False,
        "With tokens, serve <base-path>/metrics without one (a Prometheus "
        "scraper on a private network).",
        kind="bool",
    ),
    Option(
        "cors_origin",
        [],
        "Let pages of this origin (scheme://host[:port]) call the API from a "
        "browser (CORS). Repeat the flag or separate origins with commas; * "
        "lets any origin, and is refused with tokens.",
        kind="names",
        shown_default="none",
        metavar="ORIGIN",
    ),
    Option(
        "access_log",
        "off",
        "One log line per request (time, request id, method, path, status, "
        "duration, bytes, model, client): off, text (in the log's format), or "
        "json (one JSON object per line, for log shippers). With off, --debug "
        "logs text lines.",
        kind="choice",
        choices=("off", "text", "json"),
    ),
    Option("debug", False, "Log at DEBUG level.", kind="bool"),
    Option(
        "log_level",
        "INFO",
        "Log level.",
        kind="choice",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    ),
    Option(
        "log_file",
        "",
        "Also write the log to this file (reopened when logrotate has moved it).",
    ),
    Option(
        "loop",
        "auto",
        "Event loop: uvloop when installed (auto), or asyncio.",
        kind="choice",
        choices=("auto", "asyncio", "uvloop"),
    ),
)

OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
