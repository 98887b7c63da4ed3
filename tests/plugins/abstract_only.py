"""A BaseModel subclass whose every method raises NotImplementedError."""

from deepaas.model.v2.base import BaseModel


class Model(BaseModel):
    def get_metadata(self):
        return super().get_metadata()

    def warm(self):
        return super().warm()

    def get_predict_args(self):
        return super().get_predict_args()

    def predict(self, **kwargs):
        return super().predict(**kwargs)

    def get_train_args(self):
        return super().get_train_args()

    def train(self, **kwargs):
        return super().train(**kwargs)
