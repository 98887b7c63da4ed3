"""Several files in one argument, beside a single-file argument.

``files`` is declared as the issue reported it (what ``<input type=file
multiple>`` and ``curl -F files=@a -F files=@b`` send); ``one`` is an
ordinary single file. predict describes what it received, reading every
upload while it runs, so a test sees each one was on disk, whole, and
handed over in order.
"""

from webargs import fields, validate

from deepaas.model.v2.wrapper import UploadedFile


def get_predict_args():
    return {
        "files": fields.List(
            fields.Raw(metadata={"type": "file"}),
            metadata={
                "type": "file",
                "location": "form",
                "description": "Images to classify",
            },
        ),
        "one": fields.Field(type="file", location="form", required=False),
        "pair": fields.List(
            fields.Raw(metadata={"type": "file"}),
            validate=validate.Length(max=2),
            metadata={"location": "form"},
        ),
    }


def describe(upload):
    assert isinstance(upload, UploadedFile)
    with open(upload.filename, "rb") as fh:
        content = fh.read().decode()
    return {
        "name": upload.name,
        "original_filename": upload.original_filename,
        "content_type": upload.content_type,
        "content": content,
    }


def predict(**kwargs):
    described = {}
    for key, value in kwargs.items():
        if isinstance(value, list):
            described[key] = [describe(upload) for upload in value]
        else:
            described[key] = describe(value)
    return described
