"""warm() takes 5 seconds: requests wait in the queue meanwhile."""

import time


def warm():
    time.sleep(5)


def predict():
    return "warm at last"
