"""Returns values that end up in response headers (test_input_limits).

``kind=file`` returns this module's own file as a ``ReturnedFile`` named
``name`` with content type ``ctype``; ``kind=text`` returns a str, sent with
the type the client asked for in ``accept`` (no validator: any value).
"""

from webargs import fields

from deepaas.model.v2.wrapper import ReturnedFile


def get_predict_args():
    return {
        "kind": fields.Str(load_default="file"),
        "name": fields.Str(load_default="report.txt"),
        "ctype": fields.Str(load_default=None, allow_none=True),
        "accept": fields.Str(load_default="application/octet-stream"),
    }


def predict(kind="file", name="report.txt", ctype=None, accept=None):
    if kind == "text":
        return "some text"
    return ReturnedFile(filename=__file__, content_type=ctype, original_filename=name)
