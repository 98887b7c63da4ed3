"""warm() takes 2.5 seconds: requests wait in the queue meanwhile."""

import time


def warm():
    time.sleep(2.5)


def predict():
    return "warm at last"
