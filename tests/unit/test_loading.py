"""Plugin discovery and loading, and the import paths plugins rely on."""

from __future__ import annotations

import abc
import inspect
import types

import marshmallow
import pytest

from deepaas.model import sources
from deepaas.model.given import PluginUsageError, given_specs
from deepaas.model.loading import (
    PluginLoadError,
    PluginSpec,
    discover,
    load,
)
from tests.plugins import bad_schemas, echo, objects

pytestmark = pytest.mark.timeout(30)


# -- load -------------------------------------------------------------------------


def test_module_plugin():
    wrapper = load(PluginSpec("echo", "tests.plugins.echo"))
    assert wrapper.name == "echo"
    assert wrapper.plugin is echo
    assert isinstance(wrapper.plugin, types.ModuleType)
    assert wrapper.get_metadata() == {"name": "echo", "description": "echoes"}
    assert list(wrapper.predict_args) == ["x"]
    assert wrapper.has_predict and not wrapper.has_train
    assert wrapper.response_schema is None


def test_class_plugin_is_instantiated_without_arguments():
    before = objects.Model.instances
    wrapper = load(PluginSpec("cls", "tests.plugins.objects:Model"))
    assert type(wrapper.plugin) is objects.Model
    assert objects.Model.instances == before + 1
    # instance methods work (DEEPaaS 2.x used the class itself)
    assert wrapper.get_metadata() == {
        "name": "objects.Model",
        "instance": before + 1,
    }


def test_example_class_plugin():
    wrapper = load(PluginSpec("demo_class", "deepaas_example.classy:DemoModel"))
    assert type(wrapper.plugin).__name__ == "DemoModel"
    assert list(wrapper.predict_args) == ["data", "accept"]
    assert wrapper.response_schema is not None
    assert wrapper.response_schema.__name__ == "PredictResponse"


def test_instance_plugin_is_used_as_is():
    wrapper = load(PluginSpec("inst", "tests.plugins.objects:INSTANCE"))
    assert wrapper.plugin is objects.INSTANCE
    assert wrapper.get_metadata() == {"label": "prebuilt"}


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("tests.plugins.import_fails", "RuntimeError: weights.h5 not found"),
        ("tests.plugins.does_not_exist", "ModuleNotFoundError: "),
        ("tests.plugins.echo:Missing", "AttributeError: "),
        ("tests.plugins.objects:NeedsArguments", "TypeError: "),
    ],
)
def test_load_failure_names_plugin_target_and_exception(target, error):
    with pytest.raises(PluginLoadError) as exc:
        load(PluginSpec("broken", target))
    message = str(exc.value)
    assert "'broken'" in message
    assert target in message
    assert error in message
    assert "\n" not in message  # one clear line


@pytest.mark.parametrize("name", ["ListSchema", "InstanceSchema", "NotASchemaClass"])
def test_bad_schema_refused(name):
    with pytest.raises(PluginLoadError) as exc:
        load(PluginSpec("bad", f"tests.plugins.bad_schemas:{name}"))
    message = str(exc.value)
    assert "'bad'" in message
    assert "schema" in message
    assert "marshmallow.Schema subclass" in message


def test_schema_class_and_dict_accepted():
    wrapper = load(PluginSpec("good", "tests.plugins.bad_schemas:GoodSchemaClass"))
    assert wrapper.response_schema is bad_schemas.Response
    wrapper = load(PluginSpec("good", "tests.plugins.bad_schemas:GoodDictSchema"))
    schema = wrapper.response_schema
    assert schema is not None and issubclass(schema, marshmallow.Schema)
    assert schema.__name__ == "ModelPredictionResponse"
    assert schema().load({"value": 3}) == {"value": 3}
    with pytest.raises(marshmallow.ValidationError):
        schema().load({})


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("ListArgs", ["get_predict_args()", "dict of marshmallow fields", "list"]),
        ("NotAField", ["get_predict_args()", "'x'", "not a marshmallow field"]),
        ("UnknownLocation", ["get_predict_args()", "'x'", "cookies"]),
        ("BadTrainArgs", ["get_train_args()", "str"]),
    ],
)
def test_bad_arguments_refused(name, words):
    with pytest.raises(PluginLoadError) as exc:
        load(PluginSpec("bad", f"tests.plugins.bad_args:{name}"))
    message = str(exc.value)
    assert "'bad'" in message
    for word in words:
        assert word in message


def test_field_classes_accepted():
    wrapper = load(PluginSpec("fc", "tests.plugins.bad_args:FieldClasses"))
    assert isinstance(wrapper.predict_args["x"].field, marshmallow.fields.Integer)
    assert wrapper.predict_args["y"].required


def test_not_implemented_methods_fall_back():
    wrapper = load(PluginSpec("abstract", "tests.plugins.abstract_only:Model"))
    assert wrapper.predict_args == {}
    assert wrapper.train_args == {}
    assert wrapper.get_metadata()["id"] == "0"
    assert wrapper.warm() is False
    with pytest.raises(NotImplementedError):
        wrapper.predict({})


def test_bare_module_plugin():
    wrapper = load(PluginSpec("bare", "tests.plugins.bare"))
    assert wrapper.predict_args == {}
    assert not wrapper.has_predict
    assert wrapper.warm() is False
    assert wrapper.produces() == ["application/json"]
    with pytest.raises(NotImplementedError):
        wrapper.predict({})


def test_accept_choices_and_default():
    wrapper = load(PluginSpec("demo", "deepaas_example.demo"))
    choices = ["application/json", "image/png", "text/plain", "*/*"]
    assert wrapper.accept_choices == choices
    assert wrapper.produces() == choices
    assert wrapper.accept_default == "application/json"
    wrapper = load(PluginSpec("binary", "tests.plugins.binary"))
    assert wrapper.accept_default == "application/json"  # the first choice
    assert wrapper.accept_choices is not None and wrapper.accept_choices[-1] == "*/*"


# -- discover ---------------------------------------------------------------------


def test_discover_all_installed():
    specs = {spec.name: spec.target for spec in discover()}
    assert specs["demo"] == "deepaas_example.demo"
    assert specs["demo_class"] == "deepaas_example.classy:DemoModel"
    assert specs["demo_torch"] == "deepaas_example.torch_mlp"
    assert specs["demo_onnx"] == "deepaas_example.onnx_classifier"


def test_discover_named_keeps_order():
    assert discover(["demo_class", "demo"]) == [
        PluginSpec("demo_class", "deepaas_example.classy:DemoModel"),
        PluginSpec("demo", "deepaas_example.demo"),
    ]
    assert discover(["demo", "demo"]) == [PluginSpec("demo", "deepaas_example.demo")]


def test_discover_missing_lists_installed():
    with pytest.raises(PluginLoadError) as exc:
        discover(["nope"])
    message = str(exc.value)
    assert "nope" in message
    assert "not installed" in message
    assert "installed: " in message
    installed = message.split("installed: ")[-1]
    assert "demo" in installed and "demo_class" in installed


@pytest.fixture
def fresh_entry_points(monkeypatch):
    """Forget the entry points stevedore read earlier in this process."""
    from stevedore import extension

    monkeypatch.setattr(extension.ExtensionManager, "ENTRY_POINT_CACHE", {})


def fake_distribution(root, name: str, entry_points: dict[str, str]) -> None:
    """An installed distribution (a dist-info folder) declaring entry points."""
    dist_info = root / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    )
    lines = [f"{key} = {value}" for key, value in entry_points.items()]
    (dist_info / "entry_points.txt").write_text(
        "[deepaas.v2.model]\n" + "\n".join(lines) + "\n"
    )


@pytest.mark.usefixtures("fresh_entry_points")
def test_discover_broken_plugin_stops_start_up(tmp_path, monkeypatch):
    target = "tests.plugins.import_fails"
    fake_distribution(tmp_path, "broken_plugin", {"broken": target})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as exc:
        discover(["broken"])
    message = str(exc.value)
    assert "'broken'" in message
    assert "tests.plugins.import_fails" in message
    assert "RuntimeError: weights.h5 not found" in message
    with pytest.raises(PluginLoadError, match="'broken'"):
        discover()  # serving everything installed includes it
    # a broken plugin nobody asked for does not matter
    assert [spec.name for spec in discover(["demo"])] == ["demo"]


@pytest.mark.usefixtures("fresh_entry_points")
def test_discover_finds_new_entry_points(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "echo_plugin", {"echo": "tests.plugins.echo"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert discover(["echo"]) == [PluginSpec("echo", "tests.plugins.echo")]
    assert PluginSpec("echo", "tests.plugins.echo") in discover()


@pytest.mark.usefixtures("fresh_entry_points")
def test_discover_same_name_twice_is_an_error(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "other_demo", {"demo": "tests.plugins.echo"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match="declared twice"):
        discover(["demo"])


def test_discover_nothing_installed_says_how_to_install(monkeypatch):
    from deepaas.model import loading

    monkeypatch.setattr(loading, "NAMESPACE", "deepaas.tests.no.such.namespace")
    with pytest.raises(PluginLoadError) as exc:
        discover()
    assert "no model plugin is installed" in str(exc.value)
    assert "pip install" in str(exc.value)


# -- kept import paths -------------------------------------------------------------


@pytest.mark.parametrize("name", ["UploadedFile", "ReturnedFile"])
def test_file_namedtuples(name):
    from deepaas.model.v2 import wrapper

    cls = getattr(wrapper, name)
    assert cls._fields == ("name", "filename", "content_type", "original_filename")
    assert tuple(cls()) == (None, None, None, None)
    value = cls("a", "/tmp/x", "text/plain", "x.txt")
    assert isinstance(value, tuple)
    assert value.filename == "/tmp/x" and value.original_filename == "x.txt"
    assert cls(filename="/f") == cls(None, "/f", None, None)


def test_base_model():
    from deepaas.model.v2.base import BaseModel

    assert inspect.isabstract(BaseModel)
    assert issubclass(type(BaseModel), abc.ABCMeta)
    assert BaseModel.__abstractmethods__ == {
        "get_metadata",
        "warm",
        "get_predict_args",
        "predict",
        "get_train_args",
        "train",
    }
    assert BaseModel.schema is None
    with pytest.raises(TypeError):
        BaseModel()  # type: ignore[abstract]
    from tests.plugins.abstract_only import Model

    model = Model()
    for method in ("get_metadata", "warm", "get_predict_args", "get_train_args"):
        with pytest.raises(NotImplementedError):
            getattr(model, method)()
    with pytest.raises(NotImplementedError):
        model.predict(x=1)
    with pytest.raises(NotImplementedError):
        model.train(x=1)


# -- what a newcomer sees of a broken plugin -------------------------------------


def _module(root, name: str, source: str) -> str:
    path = root / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return str(path)


@pytest.mark.usefixtures("fresh_entry_points")
def test_every_broken_plugin_is_reported_with_file_and_line(tmp_path, monkeypatch):
    missing = _module(tmp_path, "np_missing", "import os\n\nimport no_such_module\n")
    library = _module(  # fails inside the standard library: the plugin's line
        tmp_path, "np_library", 'import json\n\nCONFIG = json.loads("{")\n'
    )
    syntax = _module(tmp_path, "np_syntax", "def predict(:\n    pass\n")
    _module(tmp_path, "nppkg/__init__", "")
    _module(tmp_path, "nppkg/util", "def load():\n    raise OSError('no weights')\n")
    package = _module(tmp_path, "nppkg/api", "from nppkg import util\n\nutil.load()\n")
    fake_distribution(
        tmp_path,
        "np_plugins",
        {
            "missing": "np_missing",
            "library": "np_library",
            "syntax": "np_syntax",
            "package": "nppkg.api",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as exc:
        discover(["missing", "library", "nope", "syntax", "package", "demo"])
    lines = str(exc.value).splitlines()
    assert lines[0].startswith("model(s) nope not installed; installed: ")
    assert sorted(lines[1:]) == sorted(
        [
            "cannot load model 'missing' (entry point np_missing): "
            f"ModuleNotFoundError: No module named 'no_such_module', at {missing}:3",
            "cannot load model 'library' (entry point np_library): JSONDecodeError: "
            "Expecting property name enclosed in double quotes: line 1 column 2 "
            f"(char 1), at {library}:3",
            "cannot load model 'syntax' (entry point np_syntax): SyntaxError: "
            f"invalid syntax, at {syntax}:1",
            "cannot load model 'package' (entry point nppkg.api): OSError: "
            f"no weights, at {package.replace('api.py', 'util.py')}:2",
        ]
    )
    # the exceptions are kept, for --debug's tracebacks
    assert sorted(type(e).__name__ for e in exc.value.causes) == [
        "JSONDecodeError",
        "ModuleNotFoundError",
        "OSError",
        "SyntaxError",
    ]


def test_load_all_reports_every_broken_plugin():
    from deepaas.model.loading import load_all

    specs = [
        PluginSpec("ok", "tests.plugins.echo"),
        PluginSpec("one", "tests.plugins.import_fails"),
        PluginSpec("two", "tests.plugins.echo:Missing"),
        PluginSpec("three", "tests.plugins.bad_schemas:ListSchema"),
    ]
    with pytest.raises(PluginLoadError) as exc:
        load_all(specs)
    lines = str(exc.value).splitlines()
    assert [line.split("'")[1] for line in lines] == ["one", "two", "three"]
    assert lines[0].endswith("import_fails.py:3")
    assert len(exc.value.causes) == 2  # a refused schema raised nothing
    assert list(load_all(specs[:1])) == ["ok"]


# -- plugins given on the command line ----------------------------------------------


def test_a_given_target_names_a_file_by_its_spelling_or_existence(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.txt").write_text("")
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my-models").mkdir()
    assert sources.is_path("model.py")  # ends in .py, existing or not
    assert sources.is_path("dir/thing") and sources.is_path("./nope")
    assert sources.is_path("model.txt")  # an existing file
    assert sources.is_path("my-models")  # a folder no import can name
    assert not sources.is_path("my_pkg")  # a folder that is a package name
    assert not sources.is_path("my_pkg.api") and not sources.is_path("nope.txt")
    # what a worker or an entry point resolves: the spelling alone
    assert not sources.is_file("model.txt")


def test_given_names_and_targets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs" / "lr=0.1"
    runs.mkdir(parents=True)
    (runs / "model.py").write_text("")
    specs = given_specs(["runs/lr=0.1/model.py", "demo=runs/lr=0.1/model.py:M"])
    path = str(runs / "model.py")
    assert specs == [
        PluginSpec("model", path, "plugin"),
        PluginSpec("demo", f"{path}:M", "plugin"),
    ]
    assert given_specs(["my_pkg.api:Model"]) == [
        PluginSpec("api", "my_pkg.api:Model", "plugin")
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("=a.py", "empty model name in '=a.py'"),
        ("a.py:", "empty attribute after ':' in 'a.py:'"),
        ("my_pkg.api:", "empty attribute after ':' in 'my_pkg.api:'"),
        (":Model", "plugin ':Model': no module or file given"),
        ("a.py:Mo:del", "more than one ':' in 'a.py:Mo:del'"),
        ("m=my_pkg.api:A:b", "more than one ':' in 'm=my_pkg.api:A:b'"),
    ],
)
def test_given_entries_refused(entry, message):
    with pytest.raises(PluginUsageError) as exc:
        given_specs([entry])
    assert str(exc.value).startswith(message)


def test_origin_defaults_to_plugin_for_a_file():
    # what a worker rebuilds from a target alone
    assert PluginSpec("m", "/abs/m.py").origin == "plugin"
    assert PluginSpec("m", "my_pkg.api").origin == "entry point"
    assert PluginSpec("m", "my_pkg.api", "plugin").origin == "plugin"


def test_a_given_module_with_no_plugin_function_is_refused():
    # An installed entry point may define nothing (contract, section 1) ...
    assert load(PluginSpec("bare", "tests.plugins.bare")).name == "bare"
    # ... a given target must define something.
    with pytest.raises(PluginLoadError) as exc:
        load(PluginSpec("bare", "tests.plugins.bare", "plugin"))
    assert exc.value.usage
    assert "module tests.plugins.bare has none of the DEEPaaS plugin functions" in (
        str(exc.value)
    )
    broken = PluginLoadError("x")
    assert not PluginLoadError.combine([exc.value, broken]).usage
    assert PluginLoadError.combine([exc.value, exc.value]).usage


def test_model_name_may_name_a_given_plugin():
    """``deepaas-run --plugin formy=./f.py --model-name formy``: formy is
    served (it was refused as "not installed"); other names still select
    installed models beside it."""
    from deepaas.cmd.run import _all_specs
    from deepaas.config import Settings

    given = [PluginSpec("formy", "/tmp/formy.py", "plugin")]
    specs, _ = _all_specs(Settings(model_name=("formy",)), given)
    assert [s.name for s in specs] == ["formy"]
    specs, _ = _all_specs(Settings(model_name=("demo", "formy")), given)
    assert [s.name for s in specs] == ["demo", "formy"]
    with pytest.raises(PluginLoadError, match="nope not installed"):
        _all_specs(Settings(model_name=("formy", "nope")), given)
