"""NAME.toml read key by key, and a repository folder listed: names, pairs,
stray configs (no framework needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepaas.config import load_settings
from deepaas.frameworks.model_config import (
    ConfigFileError,
    ImageConfig,
    ModelConfig,
    read_config,
)
from deepaas.frameworks.repository import REPOSITORY, scan


def config(tmp_path: Path, text: str) -> ModelConfig:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return read_config(str(path))


def test_no_file_is_an_empty_config(tmp_path: Path) -> None:
    assert read_config(str(tmp_path / "none.toml")) == ModelConfig()


def test_every_key(tmp_path: Path) -> None:
    got = config(
        tmp_path,
        """
description = "A classifier"
inputs = ["pixels"]
outputs = ["logits"]
max_batch_size = 16
max_delay_ms = 2.5
labels = "labels.txt"
top_k = 3
threads = 2
workers = 4
devices = " cpu "
[image]
input = "pixels"
size = [224, 200]
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
layout = "NHWC"
""",
    )
    assert got.description == "A classifier"
    assert got.input_names == ("pixels",)
    assert got.output_names == ("logits",)
    assert got.signature is None
    assert (got.max_batch_size, got.max_delay_ms, got.top_k) == (16, 2.5, 3)
    assert got.labels == os.path.join(tmp_path, "labels.txt")
    assert (got.threads, got.workers, got.devices) == (2, 4, "cpu")
    assert got.image == ImageConfig(
        "pixels", (224, 200), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "NHWC"
    )


def test_a_full_signature(tmp_path: Path) -> None:
    got = config(
        tmp_path,
        """
inputs = [{name = "x", datatype = "FP32", shape = [-1, 4]}]
outputs = [{name = "y", datatype = "FP32", shape = [-1, 3]}]
""",
    )
    assert got.input_names is None
    assert got.signature == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("max_batch = 4", "unknown key 'max_batch'; the keys are description,"),
        ("max_batch_size = -1", "max_batch_size must be an integer >= 0, got -1"),
        ("max_batch_size = true", "max_batch_size must be an integer >= 0"),
        (
            "max_batch_size = 257",
            "max_batch_size must be an integer from 0 to 256, got 257",
        ),
        ("max_delay_ms = 'x'", "max_delay_ms must be a number >= 0"),
        ("top_k = 0", "top_k must be an integer >= 1"),
        ("workers = 0", "workers must be an integer >= 1"),
        ("inputs = []", "inputs must be a non-empty list"),
        ("inputs = ['x', 'x']", "inputs must be distinct, non-empty names"),
        ("inputs = ['x', {name = 'y'}]", "not a mix"),
        ("inputs = [{name = 'x', datatype = 'FP32'}]", "inputs[0] must have exactly"),
        (
            "inputs = [{name = 'x', datatype = 'FP32', shape = [4]}]",
            "outputs must be declared with datatypes and shapes too",
        ),
        ("image = {input = 'x', sise = [2, 2]}", "image has unknown key 'sise'"),
        ("image = {size = [224]}", "image.size must be [height, width]"),
        (
            "image = {size = [4097, 4096]}",
            "image.size must be [height, width] in pixels, at most 16777216 "
            "pixels (4096 x 4096), got [4097, 4096]",
        ),
        ("image = {std = [0.5, 0]}", "image.std may not hold 0"),
        ("image = {layout = 'CHW'}", "image.layout must be NCHW or NHWC"),
        ("devices = ''", "devices must be a string"),
        ("workers = 100000", "workers must be an integer from 1 to 256, got 100000"),
        ("threads = 100000", "threads must be an integer from 1 to 1024, got 100000"),
        ("description = [", "is not valid TOML"),
    ],
)
def test_a_bad_value_names_the_file_and_key(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(ConfigFileError) as caught:
        config(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'm.toml'}: ")
    assert says in message
    assert "\n" not in message


@pytest.mark.timeout(30)
def test_a_fifo_config_is_refused(tmp_path: Path) -> None:
    # Reading it blocked start-up for good.
    os.mkfifo(tmp_path / "m.toml")
    with pytest.raises(ConfigFileError) as caught:
        read_config(str(tmp_path / "m.toml"))
    assert str(caught.value) == (
        f"{tmp_path / 'm.toml'}: is not a regular file (a FIFO or device)"
    )


def test_a_byte_order_mark_is_no_error(tmp_path: Path) -> None:
    # A toml saved with a BOM (Windows editors) was "not valid TOML
    # (Invalid statement (at line 1, column 1))".
    (tmp_path / "m.toml").write_bytes("\ufefftop_k = 2\n".encode())
    assert read_config(str(tmp_path / "m.toml")).top_k == 2


def test_scan_names_models_after_their_files(tmp_path: Path) -> None:
    (tmp_path / "resnet.v1.onnx").write_bytes(b"")
    (tmp_path / "linear.pt").write_bytes(b"")
    (tmp_path / "export.pt2").write_bytes(b"")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "linear.toml").write_text("workers = 2\n")
    (tmp_path / "labels.txt").write_text("a\n")  # not a model: left alone
    (tmp_path / "notes").mkdir()  # a folder without saved_model.pb: too
    (tmp_path / ".hidden.onnx").write_bytes(b"")
    entries, problems = scan(str(tmp_path))
    assert problems == []
    assert [(e.name, os.path.basename(e.path)) for e in entries] == [
        ("export", "export.pt2"),
        ("linear", "linear.pt"),
        ("resnet.v1", "resnet.v1.onnx"),
        ("saved", "saved"),
    ]
    assert entries[1].config.workers == 2
    assert entries[0].spec.origin == REPOSITORY
    assert entries[0].spec.target == str(tmp_path / "export.pt2")


def test_scan_problems_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "twice.onnx").write_bytes(b"")
    (tmp_path / "twice.pt").write_bytes(b"")
    (tmp_path / "bad name.onnx").write_bytes(b"")
    (tmp_path / "ok.onnx").write_bytes(b"")
    (tmp_path / "ok.toml").write_text("colour = 'red'\n")
    (tmp_path / "orphan.toml").write_text("")
    entries, problems = scan(str(tmp_path))
    assert entries == []
    assert len(problems) == 4
    assert all("\n" not in p for p in problems)
    joined = "\n".join(problems)
    assert (
        f"{tmp_path / 'twice.onnx'} and {tmp_path / 'twice.pt'}: two model files"
        in joined
    )
    assert "'bad name' is not usable as a model name" in joined
    assert f"{tmp_path / 'ok.toml'}: unknown key 'colour'" in joined
    assert f"{tmp_path / 'orphan.toml'}: no model file orphan.* beside it" in joined


def test_scan_a_signature_for_a_file_that_has_its_own(tmp_path: Path) -> None:
    # It reached frameworks.load, whose message spoke of its signature=
    # argument, which a repository's user never wrote.
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "m.toml").write_text(
        'inputs = [{name = "x", datatype = "FP32", shape = [-1, 4]}]\n'
        'outputs = [{name = "y", datatype = "FP32", shape = [-1, 3]}]\n'
    )
    entries, problems = scan(str(tmp_path))
    assert entries == []
    assert problems == [
        f"{tmp_path / 'm.toml'}: inputs and outputs with datatype and shape are "
        f"for TorchScript archives; {tmp_path / 'm.onnx'} describes its own "
        'tensors: give names only, e.g. inputs = ["x"], or leave them out'
    ]


def test_scan_an_empty_or_missing_folder(tmp_path: Path) -> None:
    assert scan(str(tmp_path))[1] == [
        f"model repository {tmp_path} holds no model file (.onnx, .pt, .pth, "
        ".pt2, .keras or a SavedModel directory)"
    ]
    missing = tmp_path / "nope"
    assert scan(str(missing))[1] == [f"model repository {missing} does not exist"]


def test_the_setting_has_a_flag_an_environment_variable_and_a_key(
    tmp_path: Path,
) -> None:
    ini = tmp_path / "deepaas.ini"
    ini.write_text("[DEFAULT]\nmodel_repository = /srv/from-file\n")
    assert load_settings([], {}).model_repository == ""
    from_file = load_settings(["--config-file", str(ini)], {})
    assert from_file.model_repository == "/srv/from-file"
    environ = {"DEEPAAS_MODEL_REPOSITORY": "/srv/from-env"}
    assert load_settings(["--config-file", str(ini)], environ).model_repository == (
        "/srv/from-env"
    )
    flag = ["--model-repository", "/srv/flag", "--config-file", str(ini)]
    assert load_settings(flag, environ).model_repository == "/srv/flag"
