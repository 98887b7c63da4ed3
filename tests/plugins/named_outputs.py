"""File objects returned by predict, with names (``kind`` picks one).

``accept`` is read from the Accept header; its only binary choice is
``image/png``.
"""

import io
import os
import tempfile

from webargs import fields, validate

CONTENT = b"\x89PNG fake image"

NAMES = {
    "plain": "out.png",
    "path": "/tmp/some dir/result.png",
    "windows": "C:\\results\\win.png",
    "quotes": 'say "hi".png',
    "crlf": "a\r\nSet-Cookie: x=1.png",
    "unicode": "/data/résumé 图.png",
    "pseudo": "<memory>",
    "dir": "/tmp/",
}


def get_predict_args():
    return {
        "kind": fields.Str(load_default="plain"),
        "accept": fields.Str(
            load_default="image/png",
            validate=validate.OneOf(["image/png", "application/json"]),
            metadata={"location": "headers"},
        ),
    }


MADE: list[str] = []  # the temporary files this worker returned


def predict(kind="plain", accept=None):
    if kind == "temporaries_left":
        return {"left": [path for path in MADE if os.path.exists(path)]}
    if kind == "nameless":
        return io.BytesIO(CONTENT)
    if kind == "named_temporary":
        stream = tempfile.NamedTemporaryFile(suffix=".png")  # noqa: SIM115
        stream.write(CONTENT)
        stream.seek(0)
        MADE.append(stream.name)
        return stream  # deepaas closes it, which removes it
    if kind == "bytes_name":
        stream = io.BytesIO(CONTENT)
        stream.name = b"/x/bytes\xff.png"  # not UTF-8
        return stream
    stream = io.BytesIO(CONTENT)
    stream.name = NAMES[kind]
    return stream
