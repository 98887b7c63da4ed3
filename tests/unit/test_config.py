"""Settings from flags, environment and INI file (contract section 6)."""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

import pytest

import deepaas
from deepaas import __version__
from deepaas.config import ConfigError, Settings, load_settings

pytestmark = pytest.mark.timeout(30)

DEFAULTS = {
    "listen_ip": "127.0.0.1",
    "listen_port": 5000,
    "base_path": "",
    "model_name": (),
    "workers": 1,
    "warm": True,
    "train_endpoint": True,
    "predict_endpoint": True,
    "doc_endpoint": True,
    "debug_endpoint": False,
    "client_max_size": 0,
    "debug": False,
    "log_level": "INFO",
    "log_file": "",
}
BOOLEANS = [name for name, value in DEFAULTS.items() if isinstance(value, bool)]


def load(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(list(argv), environ=env or {})


def write_ini(tmp_path: Path, text: str) -> str:
    path = tmp_path / "deepaas.conf"
    path.write_text(text)
    return str(path)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# -- defaults and flags ----------------------------------------------------------


def test_defaults():
    settings = load()
    for name, value in DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert dataclasses.asdict(Settings()) | {"config_file": ""} == dataclasses.asdict(
        settings
    )


def test_settings_class_defaults_match():
    settings = Settings()
    for name, value in DEFAULTS.items():
        assert getattr(settings, name) == value, name


@pytest.mark.parametrize("name", BOOLEANS)
def test_boolean_flags_and_no_flags(name):
    assert getattr(load(flag(name)), name) is True
    assert getattr(load("--no" + flag(name)[2:]), name) is False
    # the last one given wins
    assert getattr(load(flag(name), "--no" + flag(name)[2:]), name) is False


def test_value_flags():
    settings = load(
        "--listen-ip", "0.0.0.0",
        "--listen-port", "5027",
        "--base-path", "/foo",
        "--workers", "3",
        "--client-max-size", "1024",
        "--log-level", "WARNING",
        "--log-file", "/tmp/x.log",
    )  # fmt: skip
    assert settings.listen_ip == "0.0.0.0"
    assert settings.listen_port == 5027
    assert settings.base_path == "/foo"
    assert settings.workers == 3
    assert settings.client_max_size == 1024
    assert settings.log_level == "WARNING"
    assert settings.log_file == "/tmp/x.log"


def test_drain_delay_from_flag_environment_and_file(tmp_path):
    assert load().drain_delay == 0.0
    assert load("--drain-delay", "7.5").drain_delay == 7.5
    assert load(env={"DEEPAAS_DRAIN_DELAY": "12"}).drain_delay == 12.0
    ini = write_ini(tmp_path, "[DEFAULT]\ndrain_delay = 3\n")
    assert load("--config-file", ini).drain_delay == 3.0
    assert load("--config-file", ini, "--drain-delay", "4").drain_delay == 4.0


def test_short_workers_flag():
    assert load("-p", "4").workers == 4


def test_debug_implies_debug_log_level():
    assert load("--debug").log_level == "DEBUG"
    # --debug means DEBUG, whatever sets the log level elsewhere.
    assert load("--debug", "--log-level", "ERROR").log_level == "DEBUG"
    settings = load_settings(["--debug"], {"DEEPAAS_LOG_LEVEL": "ERROR"})
    assert settings.log_level == "DEBUG"


def test_model_name_repeatable_and_comma_separated():
    settings = load("--model-name", "a", "--model-name", "b, c", "--model-name", "d,")
    assert settings.model_name == ("a", "b", "c", "d")


def test_version(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "20")  # one line, however narrow the terminal
    with pytest.raises(SystemExit) as exc:
        load("--version")
    assert exc.value.code == 0
    folder = os.path.dirname(os.path.abspath(deepaas.__file__))
    python = platform.python_version()
    assert capsys.readouterr().out == (
        f"deepaas-run {__version__} from {folder} (Python {python})\n"
    )


def test_help_lists_both_forms_of_boolean_flags(capsys):
    with pytest.raises(SystemExit):
        load("--help")
    out = capsys.readouterr().out
    for name in BOOLEANS:
        yes, no = flag(name), "--no" + flag(name)[2:]
        assert f"[{yes} | {no}]" in " ".join(out.split()), name  # usage
        assert f"  {yes}, {no}" in out, name  # the option's own help


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        load("-h")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in [*DEFAULTS, "config_file"]:
        assert flag(name) in out, name


def test_bad_flags_exit_2(capsys):
    for argv in (["--listen-port", "abc"], ["--nope"], ["--log-level", "LOUD"]):
        with pytest.raises(SystemExit) as exc:
            load(*argv)
        assert exc.value.code == 2
        assert "error" in capsys.readouterr().err


# -- environment -----------------------------------------------------------------


def test_v2_model_environment_variable():
    assert load(env={"DEEPAAS_V2_MODEL": "demo"}).model_name == ("demo",)
    assert load(env={"DEEPAAS_V2_MODEL": "a,b"}).model_name == ("a", "b")


def test_model_name_flag_beats_v2_model_variable():
    settings = load("--model-name", "x", env={"DEEPAAS_V2_MODEL": "demo"})
    assert settings.model_name == ("x",)


@pytest.mark.parametrize("prefix", ["DEEPAAS_", "OS_DEFAULT__"])
def test_environment_variables(prefix):
    env = {
        f"{prefix}LISTEN_IP": "0.0.0.0",
        f"{prefix}LISTEN_PORT": "5027",
        f"{prefix}BASE_PATH": "/bp/",
        f"{prefix}MODEL_NAME": "a,b",
        f"{prefix}WORKERS": "2",
        f"{prefix}WARM": "false",
        f"{prefix}TRAIN_ENDPOINT": "0",
        f"{prefix}PREDICT_ENDPOINT": "no",
        f"{prefix}DOC_ENDPOINT": "off",
        f"{prefix}DEBUG_ENDPOINT": "True",
        f"{prefix}CLIENT_MAX_SIZE": "100",
        f"{prefix}LOG_LEVEL": "ERROR",
        f"{prefix}LOG_FILE": "/tmp/y.log",
    }
    settings = load(env=env)
    assert settings.listen_ip == "0.0.0.0"
    assert settings.listen_port == 5027
    assert settings.base_path == "/bp"
    assert settings.model_name == ("a", "b")
    assert settings.workers == 2
    assert settings.warm is False
    assert settings.train_endpoint is False
    assert settings.predict_endpoint is False
    assert settings.doc_endpoint is False
    assert settings.debug_endpoint is True
    assert settings.client_max_size == 100
    assert settings.log_level == "ERROR"
    assert settings.log_file == "/tmp/y.log"


def test_deepaas_prefix_beats_os_default():
    env = {"DEEPAAS_LISTEN_PORT": "1", "OS_DEFAULT__LISTEN_PORT": "2"}
    assert load(env=env).listen_port == 1


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "on"])
def test_true_spellings(text):
    assert load(env={"DEEPAAS_DEBUG_ENDPOINT": text}).debug_endpoint is True


# -- config file -----------------------------------------------------------------


def test_config_file(tmp_path):
    path = write_ini(
        tmp_path,
        "[DEFAULT]\n"
        "listen_port = 5027\n"
        "listen_ip = 0.0.0.0\n"
        "debug_endpoint = true\n"
        "warm = false\n"
        "model_name = demo, demo_class\n"
        "base_path = /from-file\n",
    )
    settings = load("--config-file", path)
    assert settings.listen_port == 5027
    assert settings.listen_ip == "0.0.0.0"
    assert settings.debug_endpoint is True
    assert settings.warm is False
    assert settings.model_name == ("demo", "demo_class")
    assert settings.base_path == "/from-file"
    assert settings.config_file == path


def test_config_file_from_environment(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nworkers = 3\n")
    assert load(env={"DEEPAAS_CONFIG_FILE": path}).workers == 3


def test_precedence(tmp_path):
    path = write_ini(
        tmp_path, "[DEFAULT]\nlisten_port = 1\nworkers = 1\nclient_max_size = 1\n"
    )
    env = {"DEEPAAS_LISTEN_PORT": "2", "DEEPAAS_WORKERS": "2"}
    settings = load("--config-file", path, "--listen-port", "3", env=env)
    assert settings.listen_port == 3  # command line
    assert settings.workers == 2  # environment over file
    assert settings.client_max_size == 1  # file over default
    assert settings.log_level == "INFO"  # default


def test_precedence_of_booleans(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nwarm = false\ndoc_endpoint = false\n")
    env = {"DEEPAAS_WARM": "true"}
    settings = load("--config-file", path, "--doc-endpoint", env=env)
    assert settings.warm is True
    assert settings.doc_endpoint is True


def test_precedence_of_model_name(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nmodel_name = from_file\n")
    assert load("--config-file", path).model_name == ("from_file",)
    env = {"DEEPAAS_V2_MODEL": "from_env"}
    assert load("--config-file", path, env=env).model_name == ("from_env",)
    settings = load("--config-file", path, "--model-name", "cli", env=env)
    assert settings.model_name == ("cli",)


# -- bad values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"DEEPAAS_LISTEN_PORT": "abc"},
            ["DEEPAAS_LISTEN_PORT in the environment: expected a whole number"],
        ),
        (
            {"OS_DEFAULT__PREDICT_TIMEOUT": "1x"},
            ["OS_DEFAULT__PREDICT_TIMEOUT in the environment: expected a number"],
        ),
        ({"DEEPAAS_MAX_BATCH_DELAY": "5ms"}, ["DEEPAAS_MAX_BATCH_DELAY", "'5ms'"]),
        ({"DEEPAAS_LISTEN_PORT": "70000"}, ["listen_port", "70000"]),
        ({"DEEPAAS_WORKERS": "0"}, ["workers"]),
        ({"DEEPAAS_CLIENT_MAX_SIZE": "-1"}, ["client_max_size"]),
        ({"DEEPAAS_WARM": "maybe"}, ["DEEPAAS_WARM", "maybe"]),
        ({"DEEPAAS_LOG_LEVEL": "LOUD"}, ["DEEPAAS_LOG_LEVEL", "INFO", "'LOUD'"]),
        ({"DEEPAAS_BASE_PATH": "foo"}, ["base_path", "must start with '/'"]),
        ({"DEEPAAS_TRAIN_CANCEL_GRACE": "nan"}, ["train_cancel_grace", "finite"]),
        # an unset template variable: the records went to the home folder
        (
            {"DEEPAAS_STATE_DIR": ""},
            ["state_dir is set but empty", "DEEPAAS_STATE_DIR"],
        ),
        ({"DEEPAAS_STATE_DIR": "  "}, ["state_dir is set but empty"]),
    ],
)
def test_bad_environment_values(env, words):
    with pytest.raises(ConfigError) as exc:
        load(env=env)
    for word in words:
        assert word in str(exc.value)


def test_bad_config_file_value(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nworkers = many\n")
    with pytest.raises(
        ConfigError, match=r"workers from config file .*deepaas.conf"
    ) as exc:
        load("--config-file", path)
    assert "expected a whole number, got 'many'" in str(exc.value)
    assert "int()" not in str(exc.value)


def test_unknown_config_file_key(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nlisten_prot = 1\n")
    with pytest.raises(ConfigError, match="listen_prot"):
        load("--config-file", path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load("--config-file", str(tmp_path / "absent.conf"))


def test_config_file_not_ini(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nlisten_port = 1\n[broken\n")
    with pytest.raises(ConfigError, match="not valid INI") as exc:
        load("--config-file", path)
    assert path in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "text",
    [
        "listen_port = 5027\n",  # no section header at all
        "[deepaas]\nlisten_port = 5027\n",  # another section only
        "[default]\nlisten_port = 5027\n",  # section names are case-sensitive
        "",
        "# just a comment\n",
    ],
)
def test_config_file_without_default_section_is_an_error_naming_it(tmp_path, text):
    path = write_ini(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load("--config-file", path)
    assert str(exc.value) == (
        f"config file {path} has no [DEFAULT] section: put a line '[DEFAULT]' "
        "above its options (e.g. '[DEFAULT]' then 'listen_port = 5027')"
    )


def test_config_file_with_an_empty_default_section_is_fine(tmp_path):
    path = write_ini(tmp_path, "# nothing set yet\n[DEFAULT]\n")
    assert load("--config-file", path).listen_port == 5000
    path = write_ini(tmp_path, "[DEFAULT]\nlisten_port = 5027\n[other]\nx = 1\n")
    assert load("--config-file", path).listen_port == 5027


def test_config_file_saved_with_a_byte_order_mark(tmp_path):
    """Windows' Notepad saves UTF-8 with a BOM: it was read as part of the
    first line, and the file said to have no [DEFAULT] section."""
    path = tmp_path / "deepaas.conf"
    path.write_bytes(b"\xef\xbb\xbf[DEFAULT]\nlisten_port = 5027\n")
    assert load("--config-file", str(path)).listen_port == 5027


def test_config_file_not_text(tmp_path):
    path = tmp_path / "deepaas.conf"
    path.write_bytes(b"[DEFAULT]\nlisten_port = \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text") as exc:
        load("--config-file", str(path))
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--listen-port", "70000"], ["listen_port"]),
        (["--workers", "0"], ["workers"]),
        (["--client-max-size", "-5"], ["client_max_size"]),
        (["--base-path", "foo"], ["base_path"]),
        (["--base-path", "//a"], ["base_path", "empty segment"]),
        (["--base-path", "/a//b"], ["base_path", "empty segment"]),
        (["--predict-timeout", "nan"], ["predict_timeout", "finite"]),
        (["--shutdown-timeout", "inf"], ["shutdown_timeout", "finite"]),
        (["--drain-delay", "nan"], ["drain_delay", "finite"]),
        (["--drain-delay", "-1"], ["drain_delay", "0 or more"]),
        (["--client-timeout", "NaN"], ["client_timeout", "finite"]),
    ],
)
def test_bad_flag_values(argv, words):
    with pytest.raises(ConfigError) as exc:
        load(*argv)
    for word in words:
        assert word in str(exc.value)


# -- base path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", ""), ("/", ""), ("/foo", "/foo"), ("/foo/", "/foo"), ("/a/b//", "/a/b")],
)
def test_base_path_normalised(given, expected):
    assert load("--base-path", given).base_path == expected
    assert Settings(base_path=given).base_path == expected


@pytest.mark.parametrize("given", ["foo", "foo/", " /foo", "http://x/foo"])
def test_base_path_must_start_with_slash(given):
    with pytest.raises(ConfigError, match="base_path"):
        Settings(base_path=given)


def test_settings_replace_revalidates():
    settings = Settings().replace(base_path="/x/")
    assert settings.base_path == "/x"
    with pytest.raises(ConfigError):
        Settings().replace(workers=0)


@pytest.mark.parametrize("given", ["/a{b}", "/{x}", "/a?x", "/a#b"])
def test_base_path_with_characters_routes_cannot_use(given):
    with pytest.raises(ConfigError, match="base_path"):
        Settings(base_path=given)


def test_the_options_table_in_the_docs_is_current() -> None:
    """docs/configuration.md's table is generated from deepaas.options.OPTIONS:
    an option added or changed without ``gen_config_table.py --write`` fails."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "docs" / "gen_config_table.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--plugin", ""], "--plugin"), (["--model-name", " , "], "--model-name")],
)
def test_an_empty_list_given_is_refused_not_taken_as_none(argv, flag):
    """``--plugin ''`` (a script's empty variable) would serve the installed
    models instead of the one meant."""
    with pytest.raises(ConfigError, match=f"{flag} was given an empty value"):
        load_settings(argv, environ={})


@pytest.mark.parametrize(
    ("argv", "env", "where"),
    [
        ((), {"DEEPAAS_WORKERS": "0"}, "(DEEPAAS_WORKERS in the environment)"),
        (("--workers", "0"), {}, "(--workers)"),
        ((), {"OS_DEFAULT__WORKERS": "-3"}, "(OS_DEFAULT__WORKERS in the environment)"),
    ],
)
def test_an_out_of_range_value_says_where_it_was_set(argv, env, where):
    with pytest.raises(ConfigError) as exc:
        load(*argv, env=env)
    assert str(exc.value).startswith("workers must be at least 1, got ")
    assert str(exc.value).endswith(where)


def test_an_out_of_range_value_from_the_config_file_names_it(tmp_path):
    path = write_ini(tmp_path, "[DEFAULT]\nmax_trainings = 0\n")
    with pytest.raises(ConfigError) as exc:
        load("--config-file", path)
    assert str(exc.value).endswith(f"(max_trainings from config file {path})")


# -- upper bounds of the seconds-valued options ------------------------------------

SECONDS_MAXIMA = {
    "drain_delay": 3600,
    "shutdown_timeout": 3600,
    "client_timeout": 3600,
    "train_cancel_grace": 3600,
    "predict_timeout": 7 * 24 * 3600,
    "worker_start_timeout": 7 * 24 * 3600,
}


def test_every_seconds_option_has_a_documented_maximum():
    """1e308 passed the "0 or more" checks: ``--drain-delay 1e308`` made one
    SIGTERM wait for ever. Each seconds-valued option now has a bound, and its
    help (hence --help and docs/configuration.md) states it."""
    from deepaas.options import OPTIONS

    seconds = {o.name: o for o in OPTIONS if o.help.startswith("Seconds")}
    assert set(seconds) == set(SECONDS_MAXIMA)
    for name, opt in seconds.items():
        assert opt.maximum == SECONDS_MAXIMA[name]
        assert str(opt.maximum) in opt.help


@pytest.mark.parametrize("name", sorted(SECONDS_MAXIMA))
def test_a_seconds_option_at_its_maximum_is_accepted(name):
    assert (
        getattr(load(flag(name), str(SECONDS_MAXIMA[name])), name)
        == (SECONDS_MAXIMA[name])
    )


@pytest.mark.parametrize("name", sorted(SECONDS_MAXIMA))
def test_a_seconds_option_over_its_maximum_from_a_flag_names_the_flag(name):
    with pytest.raises(ConfigError) as exc:
        load(flag(name), "1e308")
    assert str(exc.value) == (
        f"{name} must be at most {SECONDS_MAXIMA[name]}, got 1e+308 ({flag(name)})"
    )


@pytest.mark.parametrize("name", sorted(SECONDS_MAXIMA))
def test_a_seconds_option_over_its_maximum_from_the_environment_names_it(name):
    over = SECONDS_MAXIMA[name] + 0.5
    key = f"DEEPAAS_{name.upper()}"
    with pytest.raises(ConfigError) as exc:
        load(env={key: str(over)})
    assert str(exc.value) == (
        f"{name} must be at most {SECONDS_MAXIMA[name]}, got {over} "
        f"({key} in the environment)"
    )


@pytest.mark.parametrize("name", sorted(SECONDS_MAXIMA))
def test_a_seconds_option_over_its_maximum_from_the_config_file_names_it(
    tmp_path, name
):
    path = write_ini(tmp_path, f"[DEFAULT]\n{name} = 1e308\n")
    with pytest.raises(ConfigError) as exc:
        load("--config-file", path)
    assert str(exc.value) == (
        f"{name} must be at most {SECONDS_MAXIMA[name]}, got 1e+308 "
        f"({name} from config file {path})"
    )


def test_replace_keeps_the_maximum():
    with pytest.raises(ConfigError, match="drain_delay must be at most 3600"):
        Settings().replace(drain_delay=3601.0)


# -- upper bounds of the process counts ------------------------------------------

PROCESS_OPTIONS = ("workers", "max_trainings")


@pytest.mark.parametrize("name", PROCESS_OPTIONS)
def test_a_process_count_at_its_maximum_is_accepted(name):
    assert getattr(load(flag(name), "256"), name) == 256


@pytest.mark.parametrize("name", PROCESS_OPTIONS)
def test_a_process_count_over_its_maximum_is_refused_naming_its_source(tmp_path, name):
    """``--workers 1000000`` started processes until the kernel killed the
    server for want of memory (a QA run on a 24 GB machine)."""
    with pytest.raises(ConfigError) as exc:
        load(flag(name), "1000000")
    assert str(exc.value) == f"{name} must be at most 256, got 1000000 ({flag(name)})"
    key = f"DEEPAAS_{name.upper()}"
    with pytest.raises(ConfigError) as exc:
        load(env={key: "257"})
    assert (
        str(exc.value)
        == f"{name} must be at most 256, got 257 ({key} in the environment)"
    )
    path = write_ini(tmp_path, f"[DEFAULT]\n{name} = 300\n")
    with pytest.raises(ConfigError) as exc:
        load("--config-file", path)
    assert str(exc.value).endswith(f"got 300 ({name} from config file {path})")


def test_an_empty_state_dir_flag_is_refused():
    with pytest.raises(ConfigError, match="state_dir is set but empty") as exc:
        load("--state-dir", "/somewhere", "--state-dir", "")
    assert "--state-dir" in str(exc.value)
    assert load().state_dir is None  # unset: chosen at start-up


@pytest.mark.parametrize("value", ["-1", "604801", "1e308"])
def test_worker_start_timeout_out_of_range_is_a_usage_error(value):
    with pytest.raises(ConfigError, match="worker_start_timeout"):
        load_settings(["--worker-start-timeout", value])
