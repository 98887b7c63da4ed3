"""All settings in one place: flags, environment variables and an INI file.

Every option has a command-line flag (``--listen-port``), an environment
variable (``DEEPAAS_LISTEN_PORT``, or ``OS_DEFAULT__LISTEN_PORT`` for old
deployments) and a config-file key (``listen_port`` in ``[DEFAULT]``).
Precedence: command line > environment > config file > default.

Nothing else in deepaas reads ``sys.argv`` or ``os.environ``: the
:class:`Settings` built here is passed down.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from deepaas.flags import build_parser
from deepaas.options import (
    MAX_BATCH_DELAY_MS,
    MAX_BATCH_SIZE,
    OPTIONS,
    OPTIONS_BY_NAME,
    Option,
    parse_names,
)


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved configuration of one deepaas process."""

    listen_ip: str = "127.0.0.1"
    listen_port: int = 5000
    base_path: str = ""
    model_name: tuple[str, ...] = ()
    plugin: tuple[str, ...] = ()
    model_repository: str = ""
    reload: bool = False
    workers: int = 1
    devices: str = "auto"
    max_batch_size: int | None = None
    max_batch_delay: int | None = None
    predict_timeout: float = 0.0
    max_queue: int = 0
    worker_max_requests: int = 0
    worker_max_memory: int = 0
    drain_delay: float = 0.0
    shutdown_timeout: float = 30.0
    warm: bool = True
    worker_start_timeout: float = 1800.0
    train_endpoint: bool = True
    state_dir: str | None = None  # None: chosen (deepaas.places)
    max_trainings: int = 1
    train_gpus: int | None = None
    train_cancel_grace: float = 10.0
    reload_after_train: bool = True
    predict_endpoint: bool = True
    doc_endpoint: bool = True
    debug_endpoint: bool = False
    client_max_size: int = 0
    # A JSON body costs about 20 times its size in memory while parsed, and
    # holds the event loop about 30 ms per MB (docs/limits.md): 16 MiB keeps
    # both within what a container and a 1 s liveness probe allow.
    client_max_decoded_size: int = 16 << 20
    max_form_parts: int = 1000
    client_timeout: float = 60.0
    auth_token_file: str | None = None
    auth_tokens: str | None = dataclasses.field(default=None, repr=False)
    metrics_public: bool = False
    cors_origin: tuple[str, ...] = ()
    access_log: str = "off"
    debug: bool = False
    log_level: str = "INFO"
    log_file: str = ""
    loop: str = "auto"
    config_file: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def resolved_state_dir(self) -> str:
        """``state_dir``, or the user's state directory when it is empty."""
        if self.state_dir:
            return os.path.abspath(os.path.expanduser(self.state_dir))
        import platformdirs

        return platformdirs.user_state_dir("deepaas")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _validate(s: Settings) -> None:
    for opt in OPTIONS:
        value = getattr(s, opt.name)
        if opt.kind == "float" and not math.isfinite(value):
            # float() takes "nan" and "inf"; every comparison with NaN is
            # false, so a NaN timeout would pass the checks below unseen.
            raise ConfigError(f"{opt.name} must be a finite number, got {value}")
        if opt.maximum is not None and value is not None and value > opt.maximum:
            raise ConfigError(f"{opt.name} must be at most {opt.maximum}, got {value}")
    if s.state_dir is not None and not s.state_dir.strip():
        # as auth_token_file: an unset template variable ("${STATE_DIR}")
        # would have sent the training records to the home folder unseen
        raise ConfigError(
            "state_dir is set but empty: name a folder, or leave it unset "
            "(then the user's state directory, else $SCRATCH, else $TMPDIR)"
        )
    _check_base_path(s.base_path)
    if s.base_path.endswith("/"):
        # Normalise "/foo/" and "/" so routes never get a double slash.
        object.__setattr__(s, "base_path", s.base_path.rstrip("/"))
    if not 0 <= s.listen_port <= 65535:
        raise ConfigError(f"listen_port must be 0-65535, got {s.listen_port}")
    if s.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {s.workers}")
    if s.max_batch_size is not None and not 1 <= s.max_batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(
            f"max_batch_size must be from 1 (no batching) to {MAX_BATCH_SIZE}, "
            f"got {s.max_batch_size}"
        )
    if s.max_batch_delay is not None and not (
        0 <= s.max_batch_delay <= MAX_BATCH_DELAY_MS
    ):
        raise ConfigError(
            f"max_batch_delay must be from 0 (no wait) to {MAX_BATCH_DELAY_MS} "
            f"milliseconds, got {s.max_batch_delay}"
        )
    if s.max_trainings < 1:
        raise ConfigError(f"max_trainings must be at least 1, got {s.max_trainings}")
    if s.train_gpus is not None and s.train_gpus < 0:
        raise ConfigError(f"train_gpus must be 0 or more, got {s.train_gpus}")
    for name in (
        "predict_timeout",
        "worker_start_timeout",
        "drain_delay",
        "shutdown_timeout",
        "max_queue",
        "train_cancel_grace",
        "worker_max_requests",
        "worker_max_memory",
    ):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must be 0 or more, got {getattr(s, name)}")
    if not s.devices.strip():
        raise ConfigError("devices must be auto, cpu or a list of GPU indices/UUIDs")
    if s.max_form_parts < 1:
        raise ConfigError(f"max_form_parts must be at least 1, got {s.max_form_parts}")
    if s.client_timeout <= 0:
        raise ConfigError(f"client_timeout must be more than 0, got {s.client_timeout}")
    if s.client_max_size < 0:
        raise ConfigError(
            f"client_max_size must be 0 (unlimited) or more, got {s.client_max_size}"
        )
    if s.client_max_decoded_size < 0:
        raise ConfigError(
            "client_max_decoded_size must be 0 (unlimited) or more, "
            f"got {s.client_max_decoded_size}"
        )
    if s.access_log not in ("off", "text", "json"):
        raise ConfigError(f"access_log must be off, text or json, got {s.access_log!r}")
    object.__setattr__(s, "model_name", tuple(s.model_name))
    object.__setattr__(s, "plugin", tuple(s.plugin))
    origins = tuple(_check_origin(origin) for origin in s.cors_origin)
    if "*" in origins and (s.auth_token_file is not None or s.auth_tokens is not None):
        raise ConfigError(
            "cors_origin '*' lets every web page call the API; with tokens, "
            "name the origins of the pages that may (--cors-origin "
            "https://app.example.org)"
        )
    object.__setattr__(s, "cors_origin", origins)


# scheme://host[:port], as browsers send it in Origin (RFC 6454).
# A host as browsers serialize it in Origin: a DNS name (IDN as punycode) or
# an IP literal.
_ORIGIN = re.compile(
    r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?"
)


def _check_origin(origin: str) -> str:
    """``origin`` as browsers send it (RFC 6454 serialization: scheme and host
    in lower case, no trailing slash, no default port); ConfigError for what
    no browser sends.

    The default port (443 for https, 80 for http) is dropped, and a port is
    written without leading zeros: a browser leaves both out of ``Origin``,
    so ``https://app.example.org:443`` as given would never match."""
    if origin == "*":
        return origin
    serialized = origin.strip().lower().removesuffix("/")
    if "*" in serialized:
        raise ConfigError(
            f"cors_origin {origin!r}: patterns are not supported (browsers send "
            "one exact origin): list each origin (--cors-origin is repeatable), "
            "or give * alone for any origin (only without tokens)"
        )
    match = _ORIGIN.fullmatch(serialized)
    if not match or (match[3] and int(match[3][1:]) > 65535):
        raise ConfigError(
            f"cors_origin {origin!r} is not an origin: give "
            "scheme://host[:port], e.g. https://app.example.org or "
            "http://localhost:8080 (no path), or *"
        )
    scheme, host, port = match[1], match[2], match[3]
    if port is None or int(port[1:]) == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port[1:])}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


# What a path segment may hold unescaped (RFC 3986 "pchar"), less "%": a base
# path is used as given in routes and in links, so it must need no escaping.
_PATH_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@"
)


def _check_base_path(path: str) -> None:
    """Refuse a base path that routes could not match or links not carry.

    Clients and proxies normalise ``.``, ``..`` and empty segments away
    (RFC 3986, section 5.2.4), so routes under such a prefix would never
    be reached.
    """
    if not path:
        return
    if not path.startswith("/"):
        raise ConfigError(f"base_path must start with '/', got {path!r}")
    bad = sorted({c for c in path if c != "/" and c not in _PATH_CHARS})
    if bad:
        raise ConfigError(
            f"base_path may not contain {' '.join(map(repr, bad))}, got {path!r}"
        )
    if "//" in path.rstrip("/"):
        # Trailing slashes are trimmed; a leading "//a" would also make
        # redirects scheme-relative ("//a/..." names a host).
        raise ConfigError(
            f"base_path may not have an empty segment ('//'), got {path!r}"
        )
    segments = path.strip("/").split("/") if path.strip("/") else []
    for segment in segments:
        if segment in (".", ".."):
            raise ConfigError(
                f"base_path may not have a {segment!r} segment, got {path!r}: "
                "clients resolve it away and nothing would be reachable"
            )


def _env_key(opt: Option, environ: Mapping[str, str]) -> str | None:
    """The environment variable that sets ``opt`` (the first set of
    ``DEEPAAS_<NAME>``, ``OS_DEFAULT__<NAME>`` and the option's own), or None."""
    upper = opt.name.upper()
    for key in (f"DEEPAAS_{upper}", f"OS_DEFAULT__{upper}", *opt.env):
        if key in environ:
            return key
    return None


def _env_value(opt: Option, environ: Mapping[str, str]) -> str | None:
    key = _env_key(opt, environ)
    return None if key is None else environ[key]


# A "[DEFAULT]" line: configparser keeps no trace of it when the section is empty.
_DEFAULT_HEADER = re.compile(r"^\s*\[DEFAULT\]\s*$", re.MULTILINE)


def _read_config_file(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        # utf-8-sig: a byte order mark (Windows' Notepad saves one) is not
        # part of the first line, which would then be no [DEFAULT] header.
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start})"
        ) from exc
    if not _DEFAULT_HEADER.search(text):
        # deepaas reads only [DEFAULT] (as DEEPaaS 2.x did): options under
        # another section, or under none, would be ignored or unreadable.
        raise ConfigError(
            f"config file {path} has no [DEFAULT] section: put a line "
            "'[DEFAULT]' above its options (e.g. '[DEFAULT]' then "
            "'listen_port = 5027')"
        )
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError(
            f"config file {path} is not valid INI: {' '.join(str(exc).split())}"
        ) from exc
    values = dict(parser.defaults())
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME) - {"config_file"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return values


def load_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str = "deepaas-run",
) -> Settings:
    """Resolve the settings from argv, the environment and the config file.

    Raises :class:`ConfigError` for a bad value; argparse exits on bad flags.
    """
    environ = os.environ if environ is None else environ
    given = vars(build_parser(prog).parse_args(argv))

    config_file = given.pop("config_file", None) or _env_value(
        Option("config_file", "", ""), environ
    )
    file_values = _read_config_file(config_file) if config_file else {}

    values: dict[str, Any] = {"config_file": config_file or ""}
    sources: dict[str, str] = {}  # option -> where its value came from
    files = given.pop("plugin_files", None)
    if files:
        given["plugin"] = [*files, *given.get("plugin", [])]
    for opt in OPTIONS:
        if opt.name in given:
            value = given[opt.name]
            if opt.kind == "names":
                if any(not parse_names(item) for item in value):
                    # --plugin '' would serve the installed models instead
                    raise ConfigError(
                        f"{opt.flag} was given an empty value: give "
                        f"{opt.metavar} or leave {opt.flag} out"
                    )
                value = [n for item in value for n in parse_names(item)]
            values[opt.name] = value
            sources[opt.name] = opt.flag
            continue
        env_key = _env_key(opt, environ)
        for source, text in (
            (f"{env_key} in the environment", environ.get(env_key or "")),
            (f"{opt.name} from config file {config_file}", file_values.get(opt.name)),
        ):
            if text is None:
                continue
            try:
                values[opt.name] = opt.convert(text)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from exc
            sources[opt.name] = source
            break
    if values.get("debug"):
        values["log_level"] = "DEBUG"  # --debug means DEBUG, wherever it is set
    try:
        return Settings(**values)
    except ConfigError as exc:
        # "workers must be at least 1, got 0": say where that 0 was set.
        name = str(exc).split(" ", 1)[0]
        if name in sources and sources[name] not in str(exc):
            raise ConfigError(f"{exc} ({sources[name]})") from None
        raise
