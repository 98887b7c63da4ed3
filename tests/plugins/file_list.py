"""A list of uploaded files in one argument (test_input_limits).

predict answers the contents of the files it received, in order, so a test
sees that every upload was on disk, whole, when the model ran.
"""

from webargs import fields


def get_predict_args():
    return {
        "files": fields.List(
            fields.Field(metadata={"type": "file"}),
            metadata={"location": "form"},
        )
    }


def predict(files=()):
    contents = []
    for upload in files:
        with open(upload.filename, "rb") as fh:
            contents.append(fh.read().decode())
    return {"contents": contents}
