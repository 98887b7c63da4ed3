"""Binary outputs: a ReturnedFile, an open file, BytesIO, big bytes.

The ``accept`` field has a *tuple* of choices and no location (query, form
or JSON); ``kind`` picks what predict returns.
"""

import io

from webargs import fields, validate

from deepaas.model.v2.wrapper import ReturnedFile

ACCEPT = ("application/json", "application/pdf", "application/octet-stream")
BIG_SIZE = 3 * 1024 * 1024 + 7


def big_bytes():
    """Deterministic, not constant: a byte shifted anywhere would show."""
    return bytes(i * 7 % 251 for i in range(BIG_SIZE))


def get_predict_args():
    return {
        "kind": fields.Str(load_default="json"),
        "accept": fields.Str(validate=validate.OneOf(ACCEPT)),
    }


def predict(kind="json", accept=None):
    if kind == "returned_file":
        return ReturnedFile(
            name="report",
            filename=__file__,
            content_type="application/pdf",
            original_filename="report.pdf",
        )
    if kind == "open_file":
        return open(__file__, "rb")  # deepaas closes it
    if kind == "bytesio":
        return io.BytesIO(b"from bytesio")
    if kind == "big":
        return big_bytes()
    if kind == "big_json":
        return {"items": list(range(300_000))}  # > 1 MiB of JSON
    if kind == "missing_file":
        return ReturnedFile(filename="/nonexistent/deepaas-test.pdf")
    return {"kind": kind, "accept": accept}
