"""deepaas_example.structured without its file argument: its structured
arguments then travel in a JSON body (/openapi.json: application/json)."""

from deepaas_example import structured


def get_predict_args():
    args = structured.get_predict_args()
    del args["image"]
    return args


predict = structured.predict
