"""Request -> plugin kwargs (contract section 1, "Argument fields")."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import aiohttp
import pytest
import pytest_asyncio

from tests.support import (
    DEMO_SPECS,
    Client,
    MakeClient,
    listdir,
    plugin_spec,
    predict,
    server_tmp_dir,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

DEFAULTS = {
    "legacy_default": {"type": "str", "value": "legacy"},
    "modern_default": {"type": "str", "value": "modern"},
    "mode": {"type": "str", "value": "ok"},
}
LIMIT = 1000  # client_max_size of the `limited` client


@pytest_asyncio.fixture(loop_scope="module")
async def args_client(make_client: MakeClient) -> Client:
    return await make_client([plugin_spec("argkinds")])


@pytest_asyncio.fixture(loop_scope="module")
async def limited(make_client: MakeClient) -> Client:
    return await make_client(
        [plugin_spec("argkinds"), *DEMO_SPECS], client_max_size=LIMIT
    )


async def kwargs_of(client: Client, expect: int = 200, **request) -> dict:
    body = await predict(client, "argkinds", expect=expect, **request)
    if expect != 200:
        return body
    assert body["status"] == "OK"
    return body["predictions"]


def values(kwargs: dict) -> dict:
    """``{name: value}`` of what predict received, defaults and files left out."""
    return {
        k: v["value"] for k, v in kwargs.items() if k not in DEFAULTS and "value" in v
    }


def multipart(**parts: str | tuple[str, bytes, str]) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True, quote_fields=False)
    for name, value in parts.items():
        if isinstance(value, tuple):
            filename, content, content_type = value
            form.add_field(name, content, filename=filename, content_type=content_type)
        else:
            form.add_field(name, value)
    return form


# -- field styles, defaults, missing values ---------------------------------------


async def test_defaults_of_both_styles_and_missing_fields_left_out(args_client):
    assert await kwargs_of(args_client) == DEFAULTS


async def test_demo_plugin_defaults(demo_client):
    body = await predict(demo_client, headers={"Accept": "application/json"})
    args = body["args"]
    assert args == {
        "text": "hello",
        "number": 1,
        "flag": False,
        "choice": "a",
        "file": None,  # missing=None is a default of None
        "ratio": 0.5,
        "numbers": [1, 2],
        "demo-str": "x",
        "class_": "cat",
        "accept": "application/json",
    }
    # no default and not sent: absent, not None
    for name in ("secret", "x-demo-header", "options", "image"):
        assert name not in args
        assert name not in body["received"]


async def test_unknown_keys_ignored(args_client):
    kwargs = await kwargs_of(args_client, params={"zzz": "1"}, json={"yyy": 2, "j": 3})
    assert values(kwargs) == {"j": 3}


# -- locations --------------------------------------------------------------------


async def test_query_location(args_client):
    kwargs = await kwargs_of(args_client, params={"q": "from-query", "qs": "7"})
    assert values(kwargs) == {"q": "from-query", "qs": 7}
    assert kwargs["qs"]["type"] == "int"


async def test_query_only_field_ignores_body(args_client):
    assert values(await kwargs_of(args_client, data={"q": "x", "qs": "1"})) == {}
    assert values(await kwargs_of(args_client, json={"q": "x", "qs": 1})) == {}


async def test_form_location_urlencoded(args_client):
    kwargs = await kwargs_of(args_client, data={"f": "from-form"})
    assert values(kwargs) == {"f": "from-form"}


async def test_form_location_multipart(args_client):
    kwargs = await kwargs_of(args_client, data=multipart(f="from-multipart"))
    assert values(kwargs) == {"f": "from-multipart"}


async def test_form_only_field_ignores_query_and_json(args_client):
    assert values(await kwargs_of(args_client, params={"f": "x"})) == {}
    assert values(await kwargs_of(args_client, json={"f": "x"})) == {}


async def test_json_location(args_client):
    kwargs = await kwargs_of(args_client, json={"j": 5, "jd": {"a": [1, {"b": 2}]}})
    assert values(kwargs) == {"j": 5, "jd": {"a": [1, {"b": 2}]}}
    assert kwargs["jd"]["type"] == "dict"


async def test_json_with_charset_and_suffix(args_client):
    for content_type in ("application/json; charset=utf-8", "application/vnd.x+json"):
        kwargs = await kwargs_of(
            args_client, data=b'{"j": 9}', headers={"Content-Type": content_type}
        )
        assert values(kwargs) == {"j": 9}


async def test_json_only_field_ignores_query_and_form(args_client):
    assert values(await kwargs_of(args_client, params={"j": "1"})) == {}
    assert values(await kwargs_of(args_client, data={"j": "1"})) == {}


async def test_json_only_field_read_from_a_multipart_part_of_json_text(args_client):
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("j", "12")
    form.add_field("jd", '{"k": [1, null]}', content_type="application/json")
    kwargs = values(await kwargs_of(args_client, data=form))
    assert kwargs["j"] == 12 and kwargs["jd"] == {"k": [1, None]}


async def test_header_location_with_data_key(args_client):
    kwargs = await kwargs_of(args_client, headers={"x-token": "secret"})
    assert values(kwargs) == {"token": "secret"}
    # a header field is never read from the query or body
    assert values(await kwargs_of(args_client, params={"X-Token": "q"})) == {}
    assert values(await kwargs_of(args_client, json={"X-Token": "j"})) == {}


async def test_header_location_demo(demo_client):
    body = await predict(demo_client, headers={"X-Demo-Header": "hi"})
    assert body["args"]["x-demo-header"] == "hi"


async def test_no_location_lookup_order(args_client):
    def anywhere(kwargs):
        return values(kwargs)["anywhere"]

    assert anywhere(await kwargs_of(args_client, params={"anywhere": "q"})) == "q"
    assert anywhere(await kwargs_of(args_client, data={"anywhere": "f"})) == "f"
    assert anywhere(await kwargs_of(args_client, data=multipart(anywhere="m"))) == "m"
    assert anywhere(await kwargs_of(args_client, json={"anywhere": "j"})) == "j"
    # the query string wins over the form body and over the JSON body
    kwargs = await kwargs_of(
        args_client, params={"anywhere": "q"}, data={"anywhere": "f"}
    )
    assert anywhere(kwargs) == "q"
    kwargs = await kwargs_of(
        args_client, params={"anywhere": "q"}, json={"anywhere": "j"}
    )
    assert anywhere(kwargs) == "q"
    # the others still come from the body
    kwargs = await kwargs_of(
        args_client, params={"anywhere": "q"}, json={"klass": "x", "class": "c"}
    )
    assert values(kwargs) == {"anywhere": "q", "klass": "c"}


async def test_demo_json_body_location(demo_client):
    body = await predict(demo_client, json={"options": {"k": [1]}, "number": 3})
    assert body["args"]["options"] == {"k": [1]}
    assert body["args"]["number"] == 3


# -- lists, names -----------------------------------------------------------------


async def test_list_from_repeated_query_keys(args_client):
    kwargs = await kwargs_of(args_client, params=[("ints", "1"), ("ints", "2")])
    assert values(kwargs) == {"ints": [1, 2]}
    assert values(await kwargs_of(args_client, params={"ints": "5"})) == {"ints": [5]}


async def test_list_from_repeated_form_keys(args_client):
    kwargs = await kwargs_of(args_client, data=[("ints", "3"), ("ints", "4")])
    assert values(kwargs) == {"ints": [3, 4]}


async def test_list_from_json_array(args_client):
    assert values(await kwargs_of(args_client, json={"ints": [1, 2, 3]})) == {
        "ints": [1, 2, 3]
    }


async def test_delimited_list_takes_one_value(args_client):
    assert values(await kwargs_of(args_client, params={"csv": "1,2,3"})) == {
        "csv": [1, 2, 3]
    }
    assert values(await kwargs_of(args_client, data={"csv": "4,5"})) == {"csv": [4, 5]}


async def test_list_item_validation(args_client):
    body = await kwargs_of(
        args_client, expect=422, params=[("ints", "1"), ("ints", "x")]
    )
    assert body == {"ints": {"1": ["Not a valid integer."]}}


async def test_demo_list_from_query(demo_client):
    body = await predict(demo_client, params=[("numbers", "7"), ("numbers", "8")])
    assert body["args"]["numbers"] == [7, 8]


async def test_data_key(args_client):
    assert values(await kwargs_of(args_client, params={"class": "dog"})) == {
        "klass": "dog"
    }
    # the attribute name is not a wire name
    assert values(await kwargs_of(args_client, params={"klass": "dog"})) == {}


async def test_demo_data_key_and_dashed_name(demo_client):
    body = await predict(demo_client, params={"class": "dog", "demo-str": "dash"})
    assert body["args"]["class_"] == "dog"
    assert body["args"]["demo-str"] == "dash"


async def test_dashed_name(args_client):
    kwargs = await kwargs_of(args_client, json={"dashed-name": 4})
    assert values(kwargs) == {"dashed-name": 4}


async def test_boolean_from_query(args_client):
    assert values(await kwargs_of(args_client, params={"flag": "true"})) == {
        "flag": True
    }
    assert values(await kwargs_of(args_client, params={"flag": "0"})) == {"flag": False}


# -- validation failures ------------------------------------------------------------


async def test_custom_field(args_client):
    assert values(await kwargs_of(args_client, params={"even": "4"})) == {"even": 4}
    body = await kwargs_of(args_client, expect=422, params={"even": "3"})
    assert body == {"even": ["Not an even number."]}
    body = await kwargs_of(args_client, expect=422, json={"even": "x"})
    assert body == {"even": ["Not an integer."]}


async def test_required_missing(demo_client):
    body = await predict(demo_client, "demo_class", expect=422)
    assert body == {"data": ["Missing data for required field."]}


@pytest.mark.parametrize(
    ("request_kwargs", "messages"),
    [
        ({"params": {"qs": "abc"}}, {"qs": ["Not a valid integer."]}),
        ({"json": {"j": "abc"}}, {"j": ["Not a valid integer."]}),
        ({"json": {"jd": [1]}}, {"jd": ["Not a valid mapping type."]}),
        ({"params": {"flag": "maybe"}}, {"flag": ["Not a valid boolean."]}),
        ({"params": {"mode": "other"}}, {"mode": ["Must be one of: ok, raise."]}),
    ],
)
async def test_wrong_type_is_422(args_client, request_kwargs, messages):
    assert await kwargs_of(args_client, expect=422, **request_kwargs) == messages


INVALID_INT = ["Not a valid integer."]


@pytest.mark.parametrize("value", [1.5, -0.5, 1e300, -1e300, 2.0**60, True, False])
@pytest.mark.parametrize("compressed", [False, True])
async def test_a_json_number_that_is_no_int_is_422_not_truncated(
    args_client, value, compressed
):
    """1.5 sent to an Int argument was loaded as 1 (marshmallow's int()),
    1e300 as a 301-digit int: every Int, alone, in a list, in a dict or
    nested, refuses a float that is not a whole number a float holds
    exactly; booleans too. Both ways a JSON body is read: parsed at once
    (small, arrived whole) and read as a stream (here: compressed)."""
    body = json.dumps(
        {"j": value, "dashed-name": value, "ints": [1, value], "anywhere": "x"}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if compressed:
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    answer = await kwargs_of(args_client, expect=422, data=body, headers=headers)
    assert answer == {
        "j": INVALID_INT,
        "dashed-name": INVALID_INT,
        "ints": {"1": INVALID_INT},
    }


@pytest.mark.parametrize("value", [1.5, 1e300, True])
async def test_a_validated_int_refuses_a_fraction_too(demo_client, value):
    """demo's ``number`` has a Range validator: marshmallow's full path,
    not the plain-field one, refuses it as well."""
    body = await predict(demo_client, expect=422, json={"number": value})
    assert body == {"number": INVALID_INT}


async def test_whole_numbers_and_their_strings_are_ints(args_client):
    """2, 2.0 and -0.0 in JSON, and "2" in a query string or a form (as
    DEEPaaS 2.x clients send), still load as ints."""
    sent = {"j": 2.0, "dashed-name": -0.0, "ints": [1, 2.0, float(2**53)]}
    kwargs = await kwargs_of(args_client, json=sent)
    assert kwargs["j"]["type"] == "int"
    assert values(kwargs) == {
        "j": 2,
        "dashed-name": 0,
        "ints": [1, 2, 2**53],
    }
    assert values(await kwargs_of(args_client, params={"qs": "2"})) == {"qs": 2}
    form = await kwargs_of(args_client, data={"dashed-name": "2", "ints": "3"})
    assert values(form) == {"dashed-name": 2, "ints": [3]}


async def test_demo_validators(demo_client):
    body = await predict(demo_client, expect=422, params={"number": "200"})
    assert list(body) == ["number"]
    body = await predict(demo_client, expect=422, params={"choice": "z"})
    assert body == {"choice": ["Must be one of: a, b, c."]}
    body = await predict(demo_client, expect=422, json={"ratio": 3})
    assert list(body) == ["ratio"]


@pytest.mark.parametrize(
    "body", [b"{bad", b'{"j": 1', b"\xff\xfe", b"{'j': 1}"], ids=repr
)
async def test_invalid_json_is_400(args_client, body):
    response = await args_client.post(
        "/v2/models/argkinds/predict/",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert response.content_type == "application/json"
    assert "JSON" in (await response.json())["message"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3", b"null", b"true"])
async def test_json_not_an_object_is_400(args_client, body):
    response = await args_client.post(
        "/v2/models/argkinds/predict/",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "object" in (await response.json())["message"]


async def test_empty_json_body_is_no_arguments(args_client):
    kwargs = await kwargs_of(
        args_client, data=b"", headers={"Content-Type": "application/json"}
    )
    assert kwargs == DEFAULTS


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"garbage"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="f"\r\n\r\nabc',
        ),
    ],
    ids=["no-boundary", "no-start-boundary", "truncated"],
)
async def test_malformed_multipart_is_400(args_client, content_type, body):
    response = await args_client.post(
        "/v2/models/argkinds/predict/",
        data=body,
        headers={"Content-Type": content_type},
    )
    assert response.status == 400
    assert response.content_type == "application/json"
    assert "multipart" in (await response.json())["message"]
    assert listdir(server_tmp_dir(args_client)) == []


# -- size limit -------------------------------------------------------------------


def _over_limit_bodies():
    big = "x" * (LIMIT + 1)
    return {
        "json": {"json": {"anywhere": big}},
        "urlencoded": {"data": {"anywhere": big}},
        "multipart-text": {"data": multipart(anywhere=big)},
        "multipart-file": {
            "data": multipart(legacy_file=("a.bin", big.encode(), "x/y"))
        },
    }


@pytest.mark.parametrize(
    "kind", ["json", "urlencoded", "multipart-text", "multipart-file"]
)
async def test_body_over_limit_by_content_length_is_413(limited, kind):
    request = _over_limit_bodies()[kind]
    response = await limited.post("/v2/models/argkinds/predict/", **request)
    assert response.status == 413
    assert str(LIMIT) in (await response.json())["message"]
    assert listdir(server_tmp_dir(limited)) == []


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


@pytest.mark.parametrize("kind", ["json", "urlencoded", "multipart"])
async def test_streamed_body_over_limit_is_413(limited, kind):
    filler = [b"x" * 400] * 4
    if kind == "json":
        parts = [b'{"anywhere": "', *filler, b'"}']
        content_type = "application/json"
    elif kind == "urlencoded":
        parts = [b"anywhere=", *filler]
        content_type = "application/x-www-form-urlencoded"
    else:
        parts = [
            b"--xyz\r\n"
            b'Content-Disposition: form-data; name="legacy_file"; filename="a"\r\n'
            b"\r\n",
            *filler,
            b"\r\n--xyz--\r\n",
        ]
        content_type = "multipart/form-data; boundary=xyz"
    response = await limited.post(
        "/v2/models/argkinds/predict/",
        data=_chunks(*parts),
        headers={"Content-Type": content_type},
    )
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert response.status == 413
    assert str(LIMIT) in (await response.json())["message"]
    assert listdir(server_tmp_dir(limited)) == []


async def test_body_under_limit_passes(limited):
    kwargs = await kwargs_of(limited, json={"anywhere": "x" * (LIMIT // 2)})
    assert values(kwargs) == {"anywhere": "x" * (LIMIT // 2)}
    content = b"y" * (LIMIT // 2)
    kwargs = await kwargs_of(
        limited, data=multipart(legacy_file=("a.bin", content, "x/y"))
    )
    assert kwargs["legacy_file"]["sha256"] == hashlib.sha256(content).hexdigest()


# -- files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_kwargs",
    [{"data": {"legacy_file": "abc"}}, {"data": {"modern_file": "abc"}}],
)
async def test_text_sent_to_file_field_is_422(args_client, request_kwargs):
    body = await kwargs_of(args_client, expect=422, **request_kwargs)
    (name,) = body
    assert name in ("legacy_file", "modern_file")
    assert "Not a file" in body[name][0]


async def test_file_field_not_read_from_query_or_json(args_client):
    assert values(await kwargs_of(args_client, params={"legacy_file": "x"})) == {}
    assert values(await kwargs_of(args_client, json={"modern_file": "x"})) == {}


@pytest.mark.parametrize(
    "empty",
    [
        b'Content-Disposition: form-data; name="legacy_file"\r\n\r\n',
        b'Content-Disposition: form-data; name="legacy_file"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n",
    ],
    ids=["text-part", "no-file-selected"],
)
async def test_empty_file_input_is_missing(args_client, empty):
    # What browsers and Swagger UI send for a file input left empty.
    body = (
        b"--xyz\r\n" + empty + b"\r\n"
        b'--xyz\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'
        b"--xyz--\r\n"
    )
    kwargs = await kwargs_of(
        args_client,
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert kwargs == {**DEFAULTS, "f": {"type": "str", "value": "x"}}
    assert listdir(server_tmp_dir(args_client)) == []


async def test_empty_urlencoded_file_is_missing(args_client):
    kwargs = await kwargs_of(args_client, data={"legacy_file": "", "f": "x"})
    assert kwargs == {**DEFAULTS, "f": {"type": "str", "value": "x"}}


async def test_uploads_handed_over_and_removed(args_client):
    content_a = os.urandom(300_000)
    content_b = b"\x00\x01 second file"
    kwargs = await kwargs_of(
        args_client,
        data=multipart(
            legacy_file=("photo.JPG", content_a, "image/jpeg"),
            modern_file=("notes", content_b, "text/x-notes"),
            f="text beside",
        ),
    )
    legacy, modern = kwargs["legacy_file"], kwargs["modern_file"]
    assert legacy["type"] == modern["type"] == "UploadedFile"
    assert legacy["name"] == "legacy_file"
    assert legacy["original_filename"] == "photo.JPG"
    assert legacy["content_type"] == "image/jpeg"
    assert legacy["sha256"] == hashlib.sha256(content_a).hexdigest()
    assert modern["original_filename"] == "notes"
    assert modern["content_type"] == "text/x-notes"
    assert modern["sha256"] == hashlib.sha256(content_b).hexdigest()
    assert legacy["exists"] and modern["exists"]
    tmp_dir = server_tmp_dir(args_client)
    for upload in (legacy, modern):
        assert os.path.dirname(upload["path"]) == tmp_dir
        assert not os.path.exists(upload["path"])
    assert listdir(tmp_dir) == []
    assert values(kwargs) == {"f": "text beside"}


async def test_uploads_removed_when_the_model_raises(args_client):
    response = await args_client.post(
        "/v2/models/argkinds/predict/",
        data=multipart(legacy_file=("a.txt", b"abc", "text/plain"), mode="raise"),
    )
    assert response.status == 500
    message = (await response.json())["message"]
    assert message.startswith("RuntimeError: ")
    seen = json.loads(message.removeprefix("RuntimeError: "))
    path = seen["legacy_file"]["path"]
    assert seen["legacy_file"]["exists"]
    assert not os.path.exists(path)
    assert listdir(server_tmp_dir(args_client)) == []


async def test_uploads_removed_on_validation_failure(args_client):
    response = await args_client.post(
        "/v2/models/argkinds/predict/",
        data=multipart(legacy_file=("a.txt", b"abc", "text/plain"), even="3"),
    )
    assert response.status == 422
    assert listdir(server_tmp_dir(args_client)) == []


async def test_demo_upload_sha256(demo_client):
    content = os.urandom(2 * 1024 * 1024 + 3)
    form = multipart(file=("data.bin", content, "application/x-custom"))
    body = await predict(demo_client, data=form, headers={"Accept": "*/*"})
    assert body["args"]["file"] == {
        "original_filename": "data.bin",
        "content_type": "application/x-custom",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    assert listdir(server_tmp_dir(demo_client)) == []


async def test_demo_upload_with_query_args(demo_client):
    form = multipart(image=("i.png", b"png!", "image/png"), text="from form")
    body = await predict(demo_client, data=form, params={"number": "4"})
    assert body["args"]["image"]["sha256"] == hashlib.sha256(b"png!").hexdigest()
    assert body["args"]["text"] == "from form"
    assert body["args"]["number"] == 4
    assert body["score"] == 2.0


@pytest.mark.parametrize(
    "disposition",
    [
        'filename="r\u00e9sum\u00e9.pdf"'.encode(),  # browsers: raw UTF-8
        b"filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",  # RFC 5987
    ],
    ids=["utf8", "rfc5987"],
)
async def test_upload_original_filename_non_ascii(args_client, disposition):
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="legacy_file"; '
        + disposition
        + b"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--xyz--\r\n"
    )
    kwargs = await kwargs_of(
        args_client,
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    upload = kwargs["legacy_file"]
    assert upload["original_filename"] == "r\u00e9sum\u00e9.pdf"
    assert upload["sha256"] == hashlib.sha256(b"%PDF").hexdigest()
    assert upload["path"].endswith(".pdf")  # the safe suffix is kept


async def test_upload_path_is_safe_whatever_the_client_says(args_client):
    form = multipart(legacy_file=("../../etc/passwd", b"x", "text/plain"))
    kwargs = await kwargs_of(args_client, data=form)
    upload = kwargs["legacy_file"]
    assert os.path.dirname(upload["path"]) == server_tmp_dir(args_client)
    assert upload["original_filename"] == "../../etc/passwd"
