"""Several files in one argument (issue 8, point 11), and a single-file
argument sent twice.

A ``fields.List`` of file fields takes every multipart part of its name:
the plugin gets a list of ``UploadedFile``, in the order sent. Both
documents show it as an array of files; the uploads are removed after the
request and the form-parts limit still applies. A single-file argument sent
twice takes the first part, like every single-valued argument.
"""

from __future__ import annotations

import os

import pytest
import pytest_asyncio
from aiohttp import FormData

from deepaas.api.args import NOT_A_FILE
from tests.support import (
    Client,
    MakeClient,
    plugin_spec,
    predict,
    server_tmp_dir,
    tmp_dir_empties,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

MODEL = "lists"
PATH = f"/v2/models/{MODEL}/predict/"
SPECS = [plugin_spec(MODEL, "file_lists"), plugin_spec("legacy_list", "file_list")]
FILE_LIST = {"type": "array", "items": {"type": "string", "format": "binary"}}


@pytest_asyncio.fixture(loop_scope="module")
async def client(make_client: MakeClient) -> Client:
    return await make_client(SPECS)


def form(*parts: tuple[str, str | None, bytes]) -> FormData:
    """A multipart form of (name, file name, content) file parts."""
    data = FormData()
    for name, filename, content in parts:
        data.add_field(
            name, content, filename=filename, content_type="application/x-test"
        )
    return data


async def nothing_left(client: Client) -> None:
    """No upload is left on disk, and no file descriptor of the server
    (the test process) points into its scratch directory."""
    assert await tmp_dir_empties(client) == []
    scratch = os.path.realpath(server_tmp_dir(client))
    open_there = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed while listing
        if target.startswith(scratch + os.sep):
            open_there.append(target)
    assert open_there == []


def upload(name: str, filename: str | None, content: str) -> dict[str, str | None]:
    return {
        "name": name,
        "original_filename": filename,
        "content_type": "application/x-test",
        "content": content,
    }


async def test_several_files_in_one_argument(client):
    """What ``curl -F files=@a -F files=@b`` sends: both, in order."""
    parts = [
        ("files", f"{i}.txt", f"content {i} " * (i * 20_000 + 1)) for i in range(3)
    ]
    body = await predict(
        client, MODEL, data=form(*((n, f, c.encode()) for n, f, c in parts))
    )
    assert body == {
        "status": "OK",
        "predictions": {"files": [upload(*part) for part in parts]},
    }
    await nothing_left(client)


async def test_one_file_is_a_list_of_one(client):
    body = await predict(client, MODEL, data=form(("files", "a.png", b"A")))
    assert body["predictions"] == {"files": [upload("files", "a.png", "A")]}


async def test_no_file_leaves_the_argument_out(client):
    body = await predict(client, MODEL, data=form(("other", "x.txt", b"x")))
    assert body["predictions"] == {}
    # a browser's empty file input: a part with an empty file name, no content
    body = await predict(client, MODEL, data=form(("files", "", b"")))
    assert body["predictions"] == {}
    await nothing_left(client)


async def test_lists_and_a_single_file_together(client):
    data = form(
        ("files", "1.txt", b"one"),
        ("one", "single.txt", b"single"),
        ("files", "2.txt", b"two"),
        ("pair", "p.txt", b"p"),
    )
    body = await predict(client, MODEL, data=data)
    assert body["predictions"] == {
        "files": [upload("files", "1.txt", "one"), upload("files", "2.txt", "two")],
        "one": upload("one", "single.txt", "single"),
        "pair": [upload("pair", "p.txt", "p")],
    }
    await nothing_left(client)


async def test_a_part_without_file_name_is_a_file_too(client):
    """As for a single file argument: the part is saved, nameless."""
    data = FormData()
    data.add_field("files", "typed text")
    data.add_field("files", b"bytes", filename="b.bin", content_type="x/y")
    body = await predict(client, MODEL, data=data)
    first, second = body["predictions"]["files"]
    assert first["original_filename"] is None
    assert first["content"] == "typed text"
    assert second == {**upload("files", "b.bin", "bytes"), "content_type": "x/y"}


async def test_single_file_argument_sent_twice_takes_the_first(client):
    data = form(("one", "first.txt", b"first"), ("one", "second.txt", b"second"))
    body = await predict(client, MODEL, data=data)
    assert body["predictions"] == {"one": upload("one", "first.txt", "first")}
    await nothing_left(client)


async def test_values_that_are_not_files_are_422(client):
    urlencoded = [("files", "a"), ("files", "b")]
    body = await predict(client, MODEL, expect=422, data=urlencoded)
    assert body == {"files": [NOT_A_FILE]}
    body = await predict(client, MODEL, expect=422, data={"one": "text"})
    assert body == {"one": [NOT_A_FILE]}
    # the query string and a JSON body are not where files come from
    body = await predict(client, MODEL, params={"files": "x"})
    assert body["predictions"] == {}
    body = await predict(client, MODEL, json={"files": ["x"]})
    assert body["predictions"] == {}


async def test_the_plugin_validators_apply_to_the_list(client):
    data = form(*(("pair", f"{i}.txt", b"x") for i in range(3)))
    body = await predict(client, MODEL, expect=422, data=data)
    assert body == {"pair": ["Longer than maximum length 2."]}
    await nothing_left(client)


async def test_a_list_declared_by_its_items_only(client):
    """``fields.List(fields.Field(metadata={"type": "file"}))`` with no
    ``type`` on the list is a list of files as well."""
    body = await predict(
        client,
        "legacy_list",
        data=form(("files", "a.txt", b"A"), ("files", "b.txt", b"B")),
    )
    assert body["predictions"] == {"contents": ["A", "B"]}
    body = await predict(client, "legacy_list", expect=422, data={"files": "A"})
    assert body == {"files": [NOT_A_FILE]}


async def test_the_form_parts_limit_applies(make_client: MakeClient):
    client = await make_client(SPECS, max_form_parts=3)
    body = await predict(
        client, MODEL, data=form(*(("files", f"{i}", b"x") for i in range(3)))
    )
    assert len(body["predictions"]["files"]) == 3
    body = await predict(
        client,
        MODEL,
        expect=413,
        data=form(*(("files", f"{i}", b"x") for i in range(4))),
    )
    assert set(body) == {"message"}
    await nothing_left(client)


# -- the documents ------------------------------------------------------------


async def test_swagger_shows_an_array_of_files(client):
    from tests.api.test_spec_documents import meta_validator

    swagger = await (await client.get("/swagger.json")).json()
    post = swagger["paths"][PATH]["post"]
    params = {p["name"]: p for p in post["parameters"]}
    assert params["files"] == {
        "name": "files",
        "in": "formData",
        "required": False,
        **FILE_LIST,
        "description": "Images to classify",
        "collectionFormat": "multi",
    }
    assert params["pair"] == {
        "name": "pair",
        "in": "formData",
        "required": False,
        **FILE_LIST,
        "maxItems": 2,
        "collectionFormat": "multi",
    }
    assert params["one"]["type"] == "file"
    assert post["consumes"] == ["multipart/form-data"]
    legacy = swagger["paths"]["/v2/models/legacy_list/predict/"]["post"]
    assert legacy["consumes"] == ["multipart/form-data"]
    assert legacy["parameters"][0]["items"] == FILE_LIST["items"]
    assert list(meta_validator("2.0").iter_errors(swagger)) == []


async def test_openapi_shows_an_array_of_files(client):
    from tests.api.test_spec_documents import meta_validator

    openapi = await (await client.get("/openapi.json")).json()
    body = openapi["paths"][PATH]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["files"] == {
        **FILE_LIST,
        "description": "Images to classify",
    }
    assert schema["properties"]["pair"] == {**FILE_LIST, "maxItems": 2}
    assert schema["properties"]["one"] == {"type": "string", "format": "binary"}
    assert list(meta_validator("3.1").iter_errors(openapi)) == []


async def test_swagger_ui_page_lets_file_arrays_through(client):
    """Swagger UI 4 shows a file input per item of an array of binary
    strings, then refuses the files ("Value must be a string"): the page
    installs a plugin that lets them through (checked in a browser: the
    files reach the model)."""
    page = await (await client.get("/api")).text()
    assert "plugins: [FileArrays]" in page
    assert "system.specActions.clearValidateParams(pathMethod)" in page
