"""``deepaas-cli``: sub-commands, generated options, validation, outputs.

Most tests call :func:`deepaas.cmd.cli.main` in this process; a few run the
installed console script, as a user would.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deepaas.cmd import cli
from deepaas.model import loading
from deepaas.model.v2.results import ResultRenderer
from tests.support import DEMO, DEMO_CLASS, DEMO_SPECS

SCRIPT = Path(sys.executable).with_name("deepaas-cli")
TOY = loading.PluginSpec("toy", "tests.cli.toy")
BARE = loading.PluginSpec("bare", "tests.plugins.bare")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str, specs: Any = DEMO_SPECS):
    """``main(argv)`` -> (exit status, stdout, stderr)."""
    code = cli.main(list(argv), specs=specs)
    out, err = capsys.readouterr()
    return code, out, err


def script(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DEEPAAS_V2_MODEL"}
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        [str(SCRIPT), *argv], capture_output=True, env=env, timeout=60, **kwargs
    )


# -- the console script, end to end ---------------------------------------


def test_script_predict_json_with_file(tmp_path):
    data = tmp_path / "sample.txt"
    data.write_bytes(b"some bytes\n" * 100)
    proc = script(
        "--model-name", "demo", "predict", "--file", str(data), "--number", "7",
        "--numbers", "3", "--numbers", "[4, 5]", "--options", '{"a": 1}',
        "--class", "dog", "--flag", "yes",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    args = doc["args"]
    assert doc["warmed"] is True  # warm() ran first
    assert args["file"] == {
        "original_filename": "sample.txt",
        "content_type": "text/plain",
        "size": 1100,
        "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
    }
    assert args["number"] == 7 and args["flag"] is True
    assert args["numbers"] == [3, 4, 5]
    assert args["options"] == {"a": 1}
    assert args["class_"] == "dog"
    assert data.exists()  # the plugin got a copy


def test_script_png_to_output_file(tmp_path):
    out = tmp_path / "out.png"
    proc = script(
        "--model-name", "demo", "predict", "--accept", "image/png",
        "--deepaas_method_output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    body = out.read_bytes()
    assert body.startswith(PNG_MAGIC)
    assert f"wrote {len(body)} bytes (image/png)".encode() in proc.stderr


def test_script_several_models_need_a_name():
    proc = script("get_metadata")
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "several models are installed" in err
    assert "demo" in err and "demo_class" in err and "--model-name" in err
    assert "Traceback" not in err


def test_script_model_from_environment():
    proc = script("get_metadata", env={"DEEPAAS_V2_MODEL": "demo_class"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == "demo_class"


def test_script_help_lists_plugin_options():
    proc = script("--model-name", "demo", "predict", "--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    for expected in (
        "--number INT",
        "--flag {true,false}",
        "--choice {a,b,c}",
        "--ratio FLOAT",
        "--demo-str TEXT",
        "--class TEXT",
        "--options JSON",
        "--file PATH",
        "--numbers INT",
        "--accept {application/json,image/png,text/plain,*/*}",
        "An integer between 0 and 100 (default: 1)",
        "default: [1, 2]",
        "--nowarm",
        "--deepaas_method_output PATH",
    ):
        assert expected in text, expected


# -- sub-commands ------------------------------------------------------------


def test_get_metadata_is_the_model_document(capsys):
    from deepaas.api.v2.models import model_document

    code, out, _ = run(capsys, "--model-name", "demo", "get_metadata")
    assert code == 0
    assert json.loads(out) == model_document("", loading.load(DEMO))


def test_warm(capsys):
    code, out, _ = run(capsys, "--model-name", "demo_class", "warm")
    assert code == 0
    assert json.loads(out) == {"model": "demo_class", "warmed": True}
    code, out, _ = run(capsys, "warm", specs=[BARE])
    assert code == 0
    assert json.loads(out) == {"model": "bare", "warmed": False}


def test_predict_required_and_nowarm(capsys):
    code, out, _ = run(capsys, "--model-name", "demo_class", "predict", "--data", "hi")
    assert code == 0
    assert json.loads(out) == {"data": "hi", "upper": "HI", "length": 2, "warmed": True}
    code, out, _ = run(
        capsys, "--model-name", "demo_class", "predict", "--nowarm", "--data", "hi"
    )
    assert code == 0
    assert json.loads(out)["warmed"] is False


def test_train(capsys):
    code, out, _ = run(capsys, "--model-name", "demo", "train", "--epochs", "3")
    assert code == 0
    assert json.loads(out) == {"epochs": 3, "lr": 0.1}


def test_train_without_get_train_args(capsys):
    code, out, _ = run(capsys, "train", specs=[TOY])
    assert code == 0
    assert json.loads(out) == {"trained": True, "kwargs": {}}


def test_missing_methods(capsys):
    for command in ("predict", "train"):
        code, out, err = run(capsys, command, specs=[BARE])
        assert code == 1
        assert out == ""
        assert f"model 'bare' does not implement {command}" in err


def test_no_sub_command(capsys):
    code, _, err = run(capsys, "--model-name", "demo")
    assert code == 2
    assert "choose a sub-command" in err


# -- bad arguments: exit 2, marshmallow's messages -------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--number", "x"], "argument --number: Not a valid integer."),
        (["--number", "101"], "argument --number: Must be greater than or equal"),
        (["--choice", "z"], "argument --choice: Must be one of: a, b, c."),
        (["--flag", "maybe"], "argument --flag: Not a valid boolean."),
        (["--ratio", "nan?"], "argument --ratio: Not a valid number."),
        (["--accept", "image/gif"], "argument --accept: Must be one of:"),
        (["--numbers", "1", "--numbers", "two"], "argument --numbers:"),
        (["--options", "{not json"], "argument --options: not a JSON object"),
        (["--options", "[1, 2]"], "argument --options: Not a valid mapping type."),
        (["--file", "/no/such/file"], "argument --file: no such file"),
        (["--no-such-option", "1"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_bad_arguments(capsys, argv, message):
    code, out, err = run(capsys, "--model-name", "demo", "predict", *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_missing_required(capsys):
    code, _, err = run(capsys, "--model-name", "demo_class", "predict")
    assert code == 2
    assert "the following arguments are required: --data" in err


def test_train_args_validated(capsys):
    code, _, err = run(capsys, "--model-name", "demo", "train", "--epochs", "0")
    assert code == 2
    assert "argument --epochs: Must be greater than or equal to 1." in err


# -- model selection ---------------------------------------------------------


def test_several_models_error(capsys):
    code, out, err = run(capsys, "predict")
    assert code == 2
    assert out == ""
    assert "several models are installed (demo, demo_class)" in err


def test_only_model_is_used(capsys):
    code, out, _ = run(capsys, "get_metadata", specs=[DEMO_CLASS])
    assert code == 0
    assert json.loads(out)["id"] == "demo_class"


def test_unknown_model(capsys):
    code, _, err = run(capsys, "--model-name", "nope", "get_metadata")
    assert code == 2
    assert "nope not installed; installed: demo, demo_class" in err


def test_one_model_at_a_time(capsys):
    code, _, err = run(capsys, "--model-name", "demo,demo_class", "warm")
    assert code == 2
    assert "runs one model at a time" in err


def test_environment_variable(capsys, monkeypatch):
    monkeypatch.setenv("DEEPAAS_V2_MODEL", "demo_class")
    code, out, _ = run(capsys, "get_metadata")
    assert code == 0
    assert json.loads(out)["id"] == "demo_class"


def test_installed_plugins_are_found(capsys):
    code, out, _ = run(capsys, "--model-name", "demo", "warm", specs=None)
    assert code == 0
    assert json.loads(out)["model"] == "demo"


# -- plugin failures: exit 1, a message, a traceback only with --debug -----


def test_plugin_exception(capsys):
    code, out, err = run(
        capsys, "predict", "--count", "1", "--mode", "raise", specs=[TOY]
    )
    assert code == 1
    assert out == ""
    assert "model 'toy' failed in predict(): ValueError: boom" in err
    assert "Traceback" not in err
    code, _, err = run(
        capsys, "--debug", "predict", "--count", "1", "--mode", "raise", specs=[TOY]
    )
    assert code == 1
    assert "Traceback" in err and "boom" in err


def test_unserializable_output(capsys):
    code, _, err = run(
        capsys, "predict", "--count", "1", "--mode", "unserializable", specs=[TOY]
    )
    assert code == 1
    assert "not JSON serializable" in err


def test_plugin_prints_go_to_stderr(capsys):
    code, out, err = run(
        capsys, "predict", "--count", "2", "--mode", "print", specs=[TOY]
    )
    assert code == 0
    assert json.loads(out)["predictions"]["count"] == 2
    assert "noise from the plugin" in err


# -- files -----------------------------------------------------------------


def test_files_are_temporary_copies(capsys, tmp_path):
    first = tmp_path / "a.csv"
    first.write_text("1,2\n")
    second = tmp_path / "b.json"
    second.write_text("{}")
    code, out, _ = run(
        capsys, "predict", "--count", "1", "--docs", str(first), "--docs",
        str(second), specs=[TOY],
    )  # fmt: skip
    assert code == 0
    docs = json.loads(out)["predictions"]["docs"]
    assert [d["original_filename"] for d in docs] == ["a.csv", "b.json"]
    assert [d["content_type"] for d in docs] == ["text/csv", "application/json"]
    assert [d["text"] for d in docs] == ["1,2\n", "{}"]
    assert all(d["exists"] and d["name"] == "docs" for d in docs)
    for d in docs:
        assert d["path"] not in (str(first), str(second))
        assert not os.path.exists(d["path"])  # removed afterwards
    assert first.exists() and second.exists()


# -- the output equals the API's -------------------------------------------


def _api_body(spec: loading.PluginSpec, kwargs: dict[str, Any], tmp_path) -> bytes:
    model = loading.load(spec)
    from deepaas.model.v2.fields import build_schema, load_args

    loaded = load_args(build_schema(model.predict_args, "x"), kwargs)
    model.warm()
    result = ResultRenderer(model, str(tmp_path)).render(
        model.predict(loaded), loaded.get("accept")
    )
    assert result.body is not None
    return result.body


def test_json_output_equals_renderer(capsys, tmp_path):
    code, out, _ = run(
        capsys, "--model-name", "demo", "predict", "--text", "abc", "--number", "4"
    )
    assert code == 0
    expected = _api_body(DEMO, {"text": "abc", "number": "4"}, tmp_path)
    assert out.encode() == expected + b"\n"


async def test_json_output_equals_api(capsys, tmp_path):
    from tests.support import start_client

    client = await start_client([DEMO], {})
    try:
        response = await client.post(
            "/v2/models/demo/predict/?text=abc&number=4&numbers=5&numbers=6",
            headers={"Accept": "application/json"},
        )
        assert response.status == 200
        api_body = await response.read()
    finally:
        await client.close()
    code, out, _ = run(
        capsys, "--model-name", "demo", "predict", "--text", "abc",
        "--number", "4", "--numbers", "[5, 6]",
    )  # fmt: skip
    assert code == 0
    assert out.encode() == api_body + b"\n"  # the same bytes, and a newline


def test_text_output_to_stdout(capsys):
    code, out, _ = run(
        capsys, "--model-name", "demo", "predict", "--accept", "text/plain"
    )
    assert code == 0
    assert 'text="hello"\n' in out


def test_binary_output_file(capsys, tmp_path):
    target = tmp_path / "out.bin"
    code, out, err = run(
        capsys, "--model-name", "demo_class", "predict", "--data", "héllo",
        "--accept", "application/octet-stream",
        "--deepaas_method_output", str(target),
    )  # fmt: skip
    assert code == 0
    assert out == ""
    assert target.read_bytes() == "héllo".encode()
    assert "wrote 6 bytes (application/octet-stream)" in err


def test_json_output_file(capsys, tmp_path):
    target = tmp_path / "meta.json"
    code, out, _ = run(
        capsys, "--model-name", "demo", "train", "--lr", "0.5",
        "--deepaas_method_output", str(target),
    )  # fmt: skip
    assert code == 0
    assert out == ""
    assert json.loads(target.read_text()) == {"epochs": 1, "lr": 0.5}


class _Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def test_binary_output_refused_on_a_terminal(capsys, monkeypatch):
    terminal = _Terminal(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", terminal)
    code = cli.main(
        ["--model-name", "demo", "predict", "--accept", "image/png"], specs=DEMO_SPECS
    )
    assert code == 2
    assert terminal.buffer.getvalue() == b""
    assert "--deepaas_method_output PATH" in capsys.readouterr().err


def test_binary_output_to_redirected_stdout(capsysbinary):
    code = cli.main(
        ["--model-name", "demo", "predict", "--accept", "image/png"], specs=DEMO_SPECS
    )
    assert code == 0
    assert capsysbinary.readouterr().out.startswith(PNG_MAGIC)


def test_wildcard_accept_reaches_the_plugin_as_its_own_choice(capsys):
    """As through the API: the plugin never receives the literal */*."""
    specs = [loading.PluginSpec("formats", "tests.plugins.formats:QueryFormats")]
    code, out, err = run(
        capsys, "--model-name", "formats", "predict", "--mode", "echo",
        "--accept", "*/*", specs=specs,
    )  # fmt: skip
    assert code == 0, err
    accept = json.loads(out)["predictions"]["accept"]
    assert accept != "*/*"
    assert accept in ("image/png", "text/plain", "application/json")


# -- JSON-valued arguments: the API's rules ---------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('{"a": NaN, "b": 1}', "this JSON text contains NaN, which standard JSON"),
        ('{"a": 1, "b": 1e999}', "a number out of the range of a float (1e999)"),
        ('{"a": -Infinity}', "this JSON text contains -Infinity"),
        ("{'a': 1e999}", "a number out of the range of a float (1e999)"),  # Python
        ("[NaN]", "this JSON text contains NaN"),  # a list literal (--numbers)
    ],
)
def test_json_values_follow_the_api_rules(capsys, value, reason):
    """``NaN`` and ``1e999`` reached the plugin as nulls (exit 0) where the
    API answers 400: the value is parsed by the API's parser, and refused
    with its message as a usage error."""
    option = "--numbers" if value.startswith("[") else "--options"
    code, out, err = run(capsys, "--model-name", "demo", "predict", option, value)
    assert code == 2, err
    assert out == ""
    assert f"argument {option}: not valid JSON: " in err
    assert reason in err
    assert "Traceback" not in err


def test_valid_json_values_reach_the_plugin(capsys):
    code, out, err = run(
        capsys, "--model-name", "demo", "predict",
        "--options", '{"a": 1.5e300, "b": [1, {"c": null}], "d": "NaN"}',
    )  # fmt: skip
    assert code == 0, err
    options = json.loads(out)["args"]["options"]
    assert options == {"a": 1.5e300, "b": [1, {"c": None}], "d": "NaN"}
    code, out, err = run(
        capsys, "--model-name", "demo", "predict", "--options", "{'a': 0x10, 'b': 2}"
    )
    assert code == 0, err
    assert json.loads(out)["args"]["options"] == {"a": 16, "b": 2}


@pytest.mark.parametrize("body", [b'{"options": {"a": NaN}}', b'{"options": 1e999}'])
async def test_the_api_refuses_those_values_too(body):
    from tests.support import start_client

    client = await start_client([DEMO], {})
    try:
        response = await client.post(
            "/v2/models/demo/predict/",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 400
    finally:
        await client.close()
