"""predict_batch answers one result whatever the batch size."""

import time

batching = {"max_batch_size": 8}


def predict_batch(batch):
    time.sleep(0.3)  # so that requests queue up and form a batch
    return [{"ok": True}]
