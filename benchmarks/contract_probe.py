"""The HTTP contract, probed side by side: DEEPaaS 2.6.0 and deepaas.

Starts DEEPaaS 2.6.0 (the ``deepaas-run`` of a separate virtual environment)
and deepaas (the ``deepaas-run`` next to this interpreter) on free ports of
127.0.0.1, each in its own process group with a state/temporary directory of
its own, both serving the example models ``demo`` and ``demo_class``
(``plugins-example/``) with ``--client-max-size 1048576``, sends the same
list of requests to both and compares, case by case, the status, the
``Location`` of a redirect, the media type (and charset, except for
``application/json``, which has no charset parameter) and the body: JSON
normalised (dates, uuids, durations, ``127.0.0.1:<port>`` replaced by
placeholders; keys and values compared otherwise), text as text, anything
else by length and SHA-256. For ``/swagger.json`` it compares the set of
operations and, per operation present in both, its ``parameters`` (by name)
and ``produces``. ``GET /api`` (the Swagger UI page) is compared by status
and media type only: its HTML is no part of the contract.

Every case where the two differ must be listed in ``DOCUMENTED`` with a phrase
of ``docs/compatibility.md`` (the page listing every deliberate difference),
which the probe checks is really there. Output: one line per case (``same``,
``documented: <phrase>``, or ``DIFFERS`` with a short diff), then a summary.

The 2.6.0 environment: ``--v26-venv PATH``, or by default one made (once) under
``$TMPDIR/deepaas-contract-probe/`` with ``python3 -m venv`` and ``pip install
deepaas==2.6.0`` plus a copy of ``plugins-example`` installed ``--no-deps``
(its ``deepaas`` requirement would pull 3.x). **The first run downloads
DEEPaaS 2.6.0 and its dependencies from PyPI.** The copy is adapted to what
2.6.0 can load: ``demo_torch`` is left out (it imports ``deepaas.training``,
new in 3.x, and one plugin that fails to load makes 2.6.0 serve a fake test
model instead of all of them), and ``demo_class`` names a ready instance of
``DemoModel`` rather than the class (2.6.0 used a class entry point's class
object itself, so its methods failed; deepaas instantiates it, which yields
the same object). A given ``--v26-venv`` must already hold such a plugin.

    .venv/bin/python benchmarks/contract_probe.py [--v26-venv PATH]
        [--json PATH] [--keep-dirs]

``--v26-url URL --ours-url URL`` probe two servers already running instead
(started as above), for working on the probe itself.

Exit status: 0 no undocumented difference, 1 some, 2 the probe could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import BenchError, Server, deepaas_run_path, fail, free_ports

ROOT = Path(__file__).resolve().parent.parent
COMPAT_DOC = ROOT / "docs" / "compatibility.md"
PLUGIN_DIR = ROOT / "plugins-example"
CACHE = Path(tempfile.gettempdir()) / "deepaas-contract-probe"
MODELS = ("demo", "demo_class")
MAX_SIZE = 1048576
STARTUP_TIMEOUT_S = 60.0
TRAIN_TIMEOUT_S = 30.0
ZERO_UUID = "0" * 32
BOUNDARY = "probe-b0undary"

# case id -> "docs/compatibility.md: <phrase>". A case that differs is
# documented when it is listed here and the phrase occurs in the page
# (whitespace runs compared as one space).
ERRORS_JSON = "docs/compatibility.md: Every error is JSON"
UNKNOWN_MODEL = (
    "docs/compatibility.md: Unknown model:** any path under `/v2/models/<name>/` "
    "for a model that is not served answers 404"
)
REDIRECT_BODY = (
    "docs/compatibility.md: The body of every 308 (here and for runs of slashes) "
    "is JSON"
)
TRAIN_NEW = (
    "docs/compatibility.md: New: the `queued` status, the `deepaas_gpus` argument, "
    "the `/logs` route, and the extra record keys `model`, `start_date`, `gpus`, "
    "`devices`, `progress`"
)
UUID_DESCRIBED = (
    "docs/compatibility.md: The `uuid` path parameter of the training routes has a "
    "description"
)
WARM_IN_WORKERS = "docs/compatibility.md: `warm()` is called in every worker process"
GPUS_ARG = "docs/compatibility.md: train has one more, the new `deepaas_gpus`"
DOCUMENTED: dict[str, str] = {
    "get_model_unknown": UNKNOWN_MODEL,
    "predict_unknown_model": UNKNOWN_MODEL,
    "train_unknown_model": UNKNOWN_MODEL,
    "train_list_unknown_model": UNKNOWN_MODEL,
    "swagger_ops": (
        "docs/compatibility.md: Health and state routes** are new, and in both "
        "documents"
    ),
    "swagger:DELETE /v2/models/demo/train/{uuid}": UUID_DESCRIBED,
    "swagger:DELETE /v2/models/demo_class/train/{uuid}": UUID_DESCRIBED,
    "swagger:GET /v2/models/demo/train/{uuid}": UUID_DESCRIBED,
    "swagger:GET /v2/models/demo_class/train/{uuid}": UUID_DESCRIBED,
    "swagger:POST /v2/models/demo/predict/": (
        "docs/compatibility.md: JSON-body arguments of a route that has form or "
        "file arguments"
    ),
    "swagger:POST /v2/models/demo/train/": GPUS_ARG,
    "swagger:POST /v2/models/demo_class/train/": GPUS_ARG,
    "get_unknown_path": ERRORS_JSON,
    "head_v2": ERRORS_JSON,
    "post_models_405": ERRORS_JSON,
    "put_models_405": ERRORS_JSON,
    "delete_models_405": ERRORS_JSON,
    "post_v2_405": ERRORS_JSON,
    "get_predict_405": ERRORS_JSON,
    "put_predict_405": ERRORS_JSON,
    "put_train_405": ERRORS_JSON,
    "no_slash_models": REDIRECT_BODY,
    "no_slash_v2": REDIRECT_BODY,
    "no_slash_predict": REDIRECT_BODY,
    "slashes_model": REDIRECT_BODY,
    "slashes_predict": REDIRECT_BODY,
    "slashes_swagger": REDIRECT_BODY,
    "slashes_offsite": ERRORS_JSON,
    "slashes_unknown_model": (
        "docs/compatibility.md: A route whose parameter then names nothing "
        "(`//v2/models/nope/`) is redirected"
    ),
    "predict_file_as_field": (
        "docs/compatibility.md: a plain URL-encoded value sent for a file argument "
        "is a 422"
    ),
    "predict_invalid_json": (
        "docs/compatibility.md: A JSON body that cannot be used answers 400 saying why"
    ),
    "predict_json_not_object": (
        "docs/compatibility.md: valid JSON that is not an object (`[1]`)"
    ),
    "predict_too_large": ERRORS_JSON,
    "accept_text": (
        "docs/compatibility.md: A `str` returned for a text type is labelled "
        "`charset=utf-8`"
    ),
    "accept_star": "docs/compatibility.md: The plugin never receives `*/*`.",
    "accept_list": "docs/compatibility.md: `Accept` header negotiation.",
    "class_query": WARM_IN_WORKERS,
    "class_form": WARM_IN_WORKERS,
    "class_json": WARM_IN_WORKERS,
    "class_accept_star_arg": WARM_IN_WORKERS,
    "class_accept_header_ignored": WARM_IN_WORKERS,
    "train_post": TRAIN_NEW,
    "train_get": TRAIN_NEW,
    "train_get_slash": ERRORS_JSON,
    "train_form": TRAIN_NEW,
    "train_json": TRAIN_NEW,
    "train_class": TRAIN_NEW,
    "train_list": TRAIN_NEW,
    "train_delete_done": TRAIN_NEW,
    "train_get_after_delete": (
        "docs/compatibility.md: of a finished one, answers the record unchanged "
        "and keeps it"
    ),
    "train_get_unknown": ERRORS_JSON,
    "train_delete_unknown": ERRORS_JSON,
    "train_post_uuid_405": ERRORS_JSON,
}


# --------------------------------------------------------------------------
# HTTP


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Client:
    """One server under probe; ``state`` carries values between cases."""

    label: str
    host: str
    port: int
    state: dict[str, Any] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            return Resp(resp.status, hdrs, data)
        finally:
            conn.close()


def form(fields: list[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
    """An urlencoded body."""
    body = urllib.parse.urlencode(fields).encode()
    return body, {"Content-Type": "application/x-www-form-urlencoded"}


def multipart(
    fields: list[tuple[str, str]], files: list[tuple[str, str, str, bytes]] = ()
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of fields and (name, filename, type, data)."""
    out = []
    for name, value in fields:
        out.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'
            f"\r\n\r\n{value}\r\n".encode()
        )
    for name, filename, ctype, data in files:
        out.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    out.append(f"--{BOUNDARY}--\r\n".encode())
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    return b"".join(out), {"Content-Type": ctype}


def jsonbody(obj: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(obj).encode(), {"Content-Type": "application/json"}


# --------------------------------------------------------------------------
# Cases

Step = Callable[[Client], Resp]


@dataclass
class Case:
    id: str
    what: str  # the request, for the output
    run: Step
    kind: str = "http"  # "http" or "swagger" (compared specially)


def simple(
    method: str, path: str, body=None, headers=None, **extra_headers: str
) -> Step:
    def step(c: Client) -> Resp:
        hdrs = dict(headers or {})
        hdrs.update({k.replace("_", "-"): v for k, v in extra_headers.items()})
        return c.request(method, path, body, hdrs)

    return step


def with_body(method: str, path: str, made: tuple[bytes, dict[str, str]], **h):
    body, headers = made
    return simple(method, path, body, headers, **h)


def wait_training(c: Client, model: str, uuid: str) -> None:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        r = c.request("GET", f"/v2/models/{model}/train/{uuid}")
        if r.status != 200:
            return
        if json.loads(r.body).get("status") not in ("running", "queued"):
            return
        time.sleep(0.1)
    raise BenchError(f"{c.label}: training {uuid} of {model} did not finish")


def train_start(model: str, key: str, query: str) -> Step:
    def step(c: Client) -> Resp:
        r = c.request("POST", f"/v2/models/{model}/train/{query}")
        if r.status == 200:
            c.state[key] = json.loads(r.body)["uuid"]
            wait_training(c, model, c.state[key])
        return r

    return step


def train_uuid(method: str, model: str, key: str, suffix: str = "") -> Step:
    def step(c: Client) -> Resp:
        uuid = c.state.get(key, ZERO_UUID)
        return c.request(method, f"/v2/models/{model}/train/{uuid}{suffix}")

    return step


def cases() -> list[Case]:
    P = "/v2/models/demo/predict/"
    PC = "/v2/models/demo_class/predict/"
    T = "/v2/models/demo/train/"
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    args = [
        ("text", "hi"),
        ("number", "5"),
        ("flag", "true"),
        ("choice", "b"),
        ("ratio", "0.25"),
        ("numbers", "3"),
        ("numbers", "4"),
        ("demo-str", "y"),
        ("class", "dog"),
        ("secret", "s3cret"),
    ]
    q = "?" + urllib.parse.urlencode(args)
    out = [
        # Documents and routes
        Case("get_root", "GET /", simple("GET", "/")),
        Case("get_v2", "GET /v2/", simple("GET", "/v2/")),
        Case("get_models", "GET /v2/models/", simple("GET", "/v2/models/")),
        Case(
            "get_model_demo", "GET /v2/models/demo/", simple("GET", "/v2/models/demo/")
        ),
        Case(
            "get_model_demo_class",
            "GET /v2/models/demo_class/",
            simple("GET", "/v2/models/demo_class/"),
        ),
        Case(
            "get_model_unknown",
            "GET /v2/models/nope/",
            simple("GET", "/v2/models/nope/"),
        ),
        Case("get_swagger", "GET /swagger.json", simple("GET", "/swagger.json")),
        Case(
            "swagger_ops",
            "/swagger.json operations",
            simple("GET", "/swagger.json"),
            "swagger",
        ),
        Case("get_ui", "GET /ui", simple("GET", "/ui")),
        Case("get_api", "GET /api", simple("GET", "/api")),
        Case("get_debug", "GET /v2/debug/", simple("GET", "/v2/debug/")),
        Case("get_unknown_path", "GET /nope", simple("GET", "/nope")),
        Case("head_v2", "HEAD /v2/", simple("HEAD", "/v2/")),
        Case("post_models_405", "POST /v2/models/", simple("POST", "/v2/models/")),
        Case("put_models_405", "PUT /v2/models/", simple("PUT", "/v2/models/")),
        Case(
            "delete_models_405", "DELETE /v2/models/", simple("DELETE", "/v2/models/")
        ),
        Case("post_v2_405", "POST /v2/", simple("POST", "/v2/")),
        Case("get_predict_405", f"GET {P}", simple("GET", P)),
        Case("put_predict_405", f"PUT {P}", simple("PUT", P)),
        Case("put_train_405", f"PUT {T}", simple("PUT", T)),
        # Trailing and repeated slashes
        Case("no_slash_models", "GET /v2/models", simple("GET", "/v2/models")),
        Case("no_slash_v2", "GET /v2", simple("GET", "/v2")),
        Case(
            "no_slash_predict",
            "POST /v2/models/demo/predict?text=hi",
            simple("POST", "/v2/models/demo/predict?text=hi"),
        ),
        Case(
            "slashes_model",
            "GET //v2//models//demo",
            simple("GET", "//v2//models//demo"),
        ),
        Case(
            "slashes_predict",
            "POST //v2/models/demo/predict/?text=hi",
            simple("POST", "//v2/models/demo/predict/?text=hi"),
        ),
        Case(
            "slashes_swagger", "GET ///swagger.json", simple("GET", "///swagger.json")
        ),
        Case("slashes_offsite", "GET //evil.com/x", simple("GET", "//evil.com/x")),
        Case(
            "slashes_unknown_model",
            "GET //v2/models/nope/",
            simple("GET", "//v2/models/nope/"),
        ),
        # Predict: where arguments come from
        Case("predict_defaults", f"POST {P}", simple("POST", P)),
        Case("predict_query", f"POST {P}{q}", simple("POST", P + q)),
        Case(
            "predict_form_urlencoded",
            f"POST {P} (urlencoded)",
            with_body("POST", P, form(args)),
        ),
        Case(
            "predict_form_multipart",
            f"POST {P} (multipart)",
            with_body("POST", P, multipart(args)),
        ),
        Case(
            "predict_file",
            f"POST {P} (multipart, file)",
            with_body(
                "POST",
                P,
                multipart(
                    [("text", "f")], [("file", "a.txt", "text/plain", b"hello\n")]
                ),
            ),
        ),
        Case(
            "predict_file_and_image",
            f"POST {P} (multipart, file + image)",
            with_body(
                "POST",
                P,
                multipart(
                    [],
                    [
                        (
                            "file",
                            "a.bin",
                            "application/octet-stream",
                            bytes(range(256)),
                        ),
                        ("image", "i.png", "image/png", png),
                    ],
                ),
            ),
        ),
        Case(
            "predict_file_as_field",
            f"POST {P} (urlencoded file=x)",
            with_body("POST", P, form([("file", "x")])),
        ),
        Case(
            "predict_json_body",
            f"POST {P} (JSON body)",
            with_body(
                "POST",
                P,
                jsonbody(
                    {"text": "j", "number": 7, "numbers": [5, 6], "options": {"k": 1}}
                ),
            ),
        ),
        Case(
            "predict_json_options_query",
            f"POST {P}?text=q (JSON body options)",
            with_body("POST", P + "?text=q", jsonbody({"options": {"k": [1, 2]}})),
        ),
        Case(
            "predict_query_over_json",
            f"POST {P}?number=2 (JSON number=3)",
            with_body("POST", P + "?number=2", jsonbody({"number": 3})),
        ),
        Case(
            "predict_header_arg",
            f"POST {P} (x-demo-header)",
            simple("POST", P, x_demo_header="from-header"),
        ),
        Case(
            "predict_unknown_arg",
            f"POST {P}?nope=1",
            simple("POST", P + "?nope=1"),
        ),
        Case(
            "predict_invalid_json",
            f"POST {P} (invalid JSON)",
            simple("POST", P, b"{bad", {"Content-Type": "application/json"}),
        ),
        Case(
            "predict_json_not_object",
            f"POST {P} (JSON [1])",
            with_body("POST", P, jsonbody([1])),
        ),
        Case(
            "predict_too_large",
            f"POST {P} (2 MiB file, --client-max-size 1 MiB)",
            with_body(
                "POST",
                P,
                multipart(
                    [],
                    [("file", "big", "application/octet-stream", b"x" * 2 * MAX_SIZE)],
                ),
            ),
        ),
        # Predict: Accept
        Case(
            "accept_none", f"POST {P}?text=a (no Accept)", simple("POST", P + "?text=a")
        ),
        Case(
            "accept_json",
            f"POST {P}?text=a Accept: application/json",
            simple("POST", P + "?text=a", Accept="application/json"),
        ),
        Case(
            "accept_png",
            f"POST {P}?number=50 Accept: image/png",
            simple("POST", P + "?number=50&flag=1", Accept="image/png"),
        ),
        Case(
            "accept_text",
            f"POST {P}?text=a Accept: text/plain",
            simple("POST", P + "?text=a", Accept="text/plain"),
        ),
        Case(
            "accept_star",
            f"POST {P}?text=a Accept: */*",
            simple("POST", P + "?text=a", Accept="*/*"),
        ),
        Case(
            "accept_bad",
            f"POST {P} Accept: image/gif",
            simple("POST", P, Accept="image/gif"),
        ),
        Case(
            "accept_list",
            f"POST {P} Accept: text/html, */*;q=0.8",
            simple("POST", P, Accept="text/html, */*;q=0.8"),
        ),
        Case(
            "accept_query_ignored",
            f"POST {P}?accept=text/plain (header location)",
            simple("POST", P + "?accept=text/plain"),
        ),
        # Predict: bad arguments
        Case("bad_int", f"POST {P}?number=abc", simple("POST", P + "?number=abc")),
        Case("bad_range", f"POST {P}?number=101", simple("POST", P + "?number=101")),
        Case("bad_float", f"POST {P}?ratio=x", simple("POST", P + "?ratio=x")),
        Case("bad_bool", f"POST {P}?flag=maybe", simple("POST", P + "?flag=maybe")),
        Case("bad_choice", f"POST {P}?choice=z", simple("POST", P + "?choice=z")),
        Case("bad_list_item", f"POST {P}?numbers=x", simple("POST", P + "?numbers=x")),
        Case(
            "bad_json_type",
            f"POST {P} (JSON number: 'x', options: 1)",
            with_body("POST", P, jsonbody({"number": "x", "options": 1})),
        ),
        Case(
            "bad_several",
            f"POST {P}?number=abc&ratio=2",
            simple("POST", P + "?number=abc&ratio=2"),
        ),
        # demo_class: required argument, accept from the arguments
        Case("class_missing_required", f"POST {PC}", simple("POST", PC)),
        Case("class_query", f"POST {PC}?data=hi", simple("POST", PC + "?data=hi")),
        Case(
            "class_form",
            f"POST {PC} (urlencoded data)",
            with_body("POST", PC, form([("data", "hé")])),
        ),
        Case(
            "class_json",
            f"POST {PC} (JSON data)",
            with_body("POST", PC, jsonbody({"data": "js"})),
        ),
        Case(
            "class_accept_octet",
            f"POST {PC}?data=hi&accept=application/octet-stream",
            simple("POST", PC + "?data=hi&accept=application/octet-stream"),
        ),
        Case(
            "class_accept_bad",
            f"POST {PC}?data=hi&accept=text/csv",
            simple("POST", PC + "?data=hi&accept=text/csv"),
        ),
        Case(
            "class_accept_star_arg",
            f"POST {PC}?data=hi&accept=*/*",
            simple("POST", PC + "?data=hi&accept=*/*"),
        ),
        Case(
            "class_accept_header_ignored",
            f"POST {PC}?data=hi Accept: application/octet-stream",
            simple("POST", PC + "?data=hi", Accept="application/octet-stream"),
        ),
        # Unknown model
        Case(
            "predict_unknown_model",
            "POST /v2/models/nope/predict/",
            simple("POST", "/v2/models/nope/predict/"),
        ),
        Case(
            "train_unknown_model",
            "POST /v2/models/nope/train/",
            simple("POST", "/v2/models/nope/train/"),
        ),
        Case(
            "train_list_unknown_model",
            "GET /v2/models/nope/train/",
            simple("GET", "/v2/models/nope/train/"),
        ),
        # Training
        Case("train_list_empty", f"GET {T} (none yet)", simple("GET", T)),
        Case(
            "train_post",
            f"POST {T}?epochs=2&lr=0.5",
            train_start("demo", "t1", "?epochs=2&lr=0.5"),
        ),
        Case("train_get", f"GET {T}{{uuid}} (done)", train_uuid("GET", "demo", "t1")),
        Case(
            "train_get_slash", f"GET {T}{{uuid}}/", train_uuid("GET", "demo", "t1", "/")
        ),
        Case(
            "train_form",
            f"POST {T} (urlencoded epochs=3)",
            with_body("POST", T, form([("epochs", "3")])),
        ),
        Case(
            "train_json",
            f"POST {T} (JSON epochs=4)",
            with_body("POST", T, jsonbody({"epochs": 4})),
        ),
        Case(
            "train_bad_type", f"POST {T}?epochs=abc", simple("POST", T + "?epochs=abc")
        ),
        Case("train_bad_range", f"POST {T}?epochs=0", simple("POST", T + "?epochs=0")),
        Case(
            "train_class",
            "POST /v2/models/demo_class/train/?epochs=2",
            train_start("demo_class", "t2", "?epochs=2"),
        ),
        Case("train_list", f"GET {T} (after the trainings)", simple("GET", T)),
        Case(
            "train_delete_done",
            f"DELETE {T}{{uuid}} (done)",
            train_uuid("DELETE", "demo", "t1"),
        ),
        Case(
            "train_get_after_delete",
            f"GET {T}{{uuid}} (deleted)",
            train_uuid("GET", "demo", "t1"),
        ),
        Case("train_get_unknown", f"GET {T}{ZERO_UUID}", simple("GET", T + ZERO_UUID)),
        Case(
            "train_delete_unknown",
            f"DELETE {T}{ZERO_UUID}",
            simple("DELETE", T + ZERO_UUID),
        ),
        Case(
            "train_post_uuid_405", f"POST {T}{ZERO_UUID}", simple("POST", T + ZERO_UUID)
        ),
    ]
    return out


def wait_trainings_done(c: Client) -> None:
    """Let trainings started by cases (form, JSON) finish, so lists compare."""
    for model in MODELS:
        r = c.request("GET", f"/v2/models/{model}/train/")
        if r.status == 200:
            for rec in json.loads(r.body):
                wait_training(c, model, rec["uuid"])


# --------------------------------------------------------------------------
# Normalisation and comparison

VOLATILE = [
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?\b"), "<date>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<uuid>"),
    (re.compile(r"\b\d+:\d{2}:\d{2}(\.\d+)?\b"), "<duration>"),
    (re.compile(r"(127\.0\.0\.1|localhost):\d+"), "<host>"),
]


def scrub(text: str) -> str:
    for pattern, repl in VOLATILE:
        text = pattern.sub(repl, text)
    return text


def norm_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {scrub(k): norm_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [norm_json(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def media_type(headers: dict[str, str]) -> str | None:
    raw = headers.get("content-type")
    if raw is None:
        return None
    parts = [p.strip().lower() for p in raw.split(";")]
    mtype, params = parts[0], sorted(p.replace(" ", "") for p in parts[1:] if p)
    if mtype == "application/json":  # RFC 8259: no charset parameter; UTF-8
        params = [p for p in params if not p.startswith("charset=")]
    return ";".join([mtype, *params])


def norm_body(resp: Resp) -> Any:
    ctype = media_type(resp.headers) or ""
    if not resp.body:
        return ""
    if "json" in ctype:
        try:
            return norm_json(json.loads(resp.body))
        except ValueError:
            pass
    if ctype.startswith("text/") or "json" in ctype:
        return scrub(resp.body.decode("utf-8", "replace"))
    digest = hashlib.sha256(resp.body).hexdigest()[:16]
    return f"<{len(resp.body)} bytes, sha256 {digest}>"


def view(resp: Resp) -> dict[str, Any]:
    """What is compared of one answer."""
    out: dict[str, Any] = {
        "status": resp.status,
        "content-type": media_type(resp.headers),
    }
    if 300 <= resp.status < 400:
        out["location"] = scrub(resp.headers.get("location", ""))
    if resp.status != 204:
        out["body"] = norm_body(resp)
    return out


def swagger_view(resp: Resp) -> dict[str, Any]:
    """Per operation: parameters by name and produces."""
    doc = json.loads(resp.body)
    ops: dict[str, Any] = {}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict):
                continue
            params = {p.get("name"): norm_json(p) for p in op.get("parameters", [])}
            ops[f"{method.upper()} {path}"] = {
                "parameters": params,
                "produces": op.get("produces"),
            }
    return ops


def diff(a: Any, b: Any, path: str = "$") -> Iterator[str]:
    """Differences between ``a`` (2.6.0) and ``b`` (ours), one line each."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key not in b:
                yield f"{path}.{key}: only in 2.6.0 ({short(a[key])})"
            else:
                yield from diff(a[key], b[key], f"{path}.{key}")
        for key in b:
            if key not in a:
                yield f"{path}.{key}: only in ours ({short(b[key])})"
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from diff(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield f"{path}: {short(a)} != {short(b)}"


def short(value: Any, limit: int = 80) -> str:
    text = (
        json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compat_text() -> str:
    return " ".join(COMPAT_DOC.read_text().split())


def documented(case_id: str, doc: str) -> tuple[str | None, str | None]:
    """(phrase, problem) of the DOCUMENTED entry of ``case_id``."""
    entry = DOCUMENTED.get(case_id)
    if entry is None:
        return None, None
    prefix = "docs/compatibility.md:"
    if not entry.startswith(prefix):
        return entry, f"entry does not start with {prefix!r}"
    phrase = " ".join(entry[len(prefix) :].split())
    if phrase not in doc:
        return phrase, f"phrase not found in docs/compatibility.md: {phrase!r}"
    return phrase, None


# --------------------------------------------------------------------------
# Running


def probe(v26: Client, ours: Client) -> list[dict[str, Any]]:
    doc = compat_text()
    results = []
    for case in cases():
        if case.id == "train_list":
            wait_trainings_done(v26)
            wait_trainings_done(ours)
        a_resp, b_resp = case.run(v26), case.run(ours)
        if case.kind == "swagger":
            a_ops, b_ops = swagger_view(a_resp), swagger_view(b_resp)
            only_a = sorted(set(a_ops) - set(b_ops))
            only_b = sorted(set(b_ops) - set(a_ops))
            lines = [f"operation only in 2.6.0: {op}" for op in only_a]
            lines += [f"operation only in ours: {op}" for op in only_b]
            results.append(result(case.id, case.what, lines, doc))
            for op in sorted(set(a_ops) & set(b_ops)):
                cid = f"swagger:{op}"
                lines = list(diff(a_ops[op], b_ops[op]))
                results.append(result(cid, f"/swagger.json {op}", lines, doc))
            continue
        a, b = view(a_resp), view(b_resp)
        if case.id == "get_api":  # Swagger UI's HTML is no part of the contract
            a.pop("body", None)
            b.pop("body", None)
        if case.id == "get_swagger":  # the document itself: swagger_ops
            a["body"] = {k: a["body"].get(k) for k in ("swagger", "paths")}
            b["body"] = {k: b["body"].get(k) for k in ("swagger", "paths")}
            a["body"]["paths"] = sorted(a["body"]["paths"] or [])
            b["body"]["paths"] = sorted(b["body"]["paths"] or [])
            a["body"]["paths"] = b["body"]["paths"] = len(a["body"]["paths"]) > 0
        results.append(result(case.id, case.what, list(diff(a, b)), doc, a, b))
    return results


def result(cid, what, lines, doc, a=None, b=None) -> dict[str, Any]:
    phrase, problem = documented(cid, doc)
    if not lines:
        verdict = "same"
    elif phrase is not None and problem is None:
        verdict = "documented"
    else:
        verdict = "DIFFERS"
    out = {"id": cid, "request": what, "verdict": verdict, "diff": lines}
    if phrase is not None:
        out["documented"] = phrase
    if problem:
        out["problem"] = problem
    if a is not None:
        out["v26"], out["ours"] = a, b
    return out


def report(results: list[dict[str, Any]]) -> int:
    width = max(len(r["id"]) for r in results)
    for r in results:
        head = f"{r['id']:<{width}}  "
        if r["verdict"] == "same":
            line = head + "same"
            if "documented" in r:
                line += "  (DOCUMENTED entry not needed)"
        elif r["verdict"] == "documented":
            line = head + f"documented: {r['documented']}"
        else:
            line = head + "DIFFERS: " + "; ".join(r["diff"][:4])
            if len(r["diff"]) > 4:
                line += f"; ... ({len(r['diff'])} differences)"
            if r.get("problem"):
                line += f"  [{r['problem']}]"
        print(line)
    counts = {
        v: sum(r["verdict"] == v for r in results)
        for v in ("same", "documented", "DIFFERS")
    }
    stale = sorted(
        set(DOCUMENTED) - {r["id"] for r in results if r["verdict"] == "documented"}
    )
    print(
        f"\n{len(results)} cases: {counts['same']} same, {counts['documented']} "
        f"documented, {counts['DIFFERS']} undocumented differences"
    )
    if stale:
        print(f"DOCUMENTED entries not used by a difference: {', '.join(stale)}")
    return 1 if counts["DIFFERS"] else 0


def ensure_v26_venv(path: Path | None) -> Path:
    """Return a venv holding DEEPaaS 2.6.0 and the example plugins."""
    if path is not None:
        if not (path / "bin" / "deepaas-run").exists():
            raise BenchError(f"{path}/bin/deepaas-run not found")
        return path
    venv = CACHE / "v26"
    marker = venv / ".probe-ready"
    if marker.exists():
        return venv
    print(
        f"making the DEEPaaS 2.6.0 environment in {venv} (downloads from PyPI) ...",
        flush=True,
    )
    shutil.rmtree(venv, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    run(["python3", "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, "deepaas==2.6.0"])
    with tempfile.TemporaryDirectory(prefix="deepaas-probe-plugin-") as tmp:
        src = Path(tmp) / "plugins-example"
        shutil.copytree(
            PLUGIN_DIR, src, ignore=shutil.ignore_patterns("build", "*.egg-info")
        )
        (src / "deepaas_example" / "classy_instance.py").write_text(
            "from deepaas_example.classy import DemoModel\n\nmodel = DemoModel()\n"
        )
        pyproject = src / "pyproject.toml"
        text = pyproject.read_text()
        text = re.sub(r"(?m)^demo_torch = .*\n", "", text)
        text = re.sub(
            r"(?m)^demo_class = .*$",
            'demo_class = "deepaas_example.classy_instance:model"',
            text,
        )
        pyproject.write_text(text)
        run([*pip, "--no-deps", str(src)])
    marker.write_text("deepaas==2.6.0 + plugins-example (demo, demo_class)\n")
    return venv


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")


def clean_env(tmp: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
    }
    env.update(PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    return env


def wait_up(server: Server, timeout: float = STARTUP_TIMEOUT_S) -> None:
    assert server.proc is not None
    client = Client(server.label, "127.0.0.1", server.port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.label} exited with status {server.proc.returncode}.\n"
                f"command: {' '.join(server.argv)}\n--- output ---\n{server.output()}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if client.request("GET", "/v2/models/").status == 200:
                return
        time.sleep(0.2)
    raise BenchError(
        f"{server.label} did not answer GET /v2/models/ within {timeout:.0f} s\n"
        f"--- output ---\n{server.output()}"
    )


def client_for(url: str, label: str) -> Client:
    parsed = urllib.parse.urlsplit(url)
    return Client(label, parsed.hostname or "127.0.0.1", parsed.port or 80)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--v26-venv", type=Path, help="venv with deepaas==2.6.0 and the example plugins"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--keep-dirs", action="store_true", help="keep the servers' directories"
    )
    parser.add_argument("--v26-url", help="probe this running DEEPaaS 2.6.0 instead")
    parser.add_argument("--ours-url", help="probe this running deepaas instead")
    opts = parser.parse_args()

    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="deepaas-contract-probe-"))
    try:
        if opts.v26_url and opts.ours_url:
            v26 = client_for(opts.v26_url, "2.6.0")
            ours = client_for(opts.ours_url, "ours")
        else:
            venv = ensure_v26_venv(opts.v26_venv)
            ours_run = deepaas_run_path()
            p26, pours = free_ports(2)
            common = ["--listen-ip", "127.0.0.1", "--client-max-size", str(MAX_SIZE)]
            for label, port, argv in (
                ("v26", p26, [str(venv / "bin" / "deepaas-run"), *common]),
                (
                    "ours",
                    pours,
                    [
                        str(ours_run),
                        *common,
                        "--model-name",
                        ",".join(MODELS),
                        "--state-dir",
                        str(workdir / "ours" / "state"),
                    ],
                ),
            ):
                home = workdir / label
                (home / "tmp").mkdir(parents=True)
                server = Server(
                    label,
                    [*argv, "--listen-port", str(port)],
                    clean_env(home / "tmp"),
                    port,
                    home,
                )
                servers.append(server)
                server.start()
            for server in servers:
                wait_up(server)
            v26 = Client("2.6.0", "127.0.0.1", p26)
            ours = Client("ours", "127.0.0.1", pours)
        results = probe(v26, ours)
    except BenchError as exc:
        fail(f"contract probe: {exc}")
    except (OSError, http.client.HTTPException) as exc:
        fail(f"contract probe: {type(exc).__name__}: {exc}")
    finally:
        for server in servers:
            left = server.stop()
            if left:
                print(f"WARNING: {server.label} left processes {left}", file=sys.stderr)
        if not opts.keep_dirs:
            shutil.rmtree(workdir, ignore_errors=True)
    code = report(results)
    if opts.json:
        opts.json.write_text(json.dumps({"results": results, "exit": code}, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
