"""The batch policy: the plugin's batching attribute, overridden by flags."""

from __future__ import annotations

import math

import pytest

from deepaas.config import ConfigError, Settings
from deepaas.engine.batching import (
    DEFAULT_BATCH_SIZE,
    BatchPolicy,
    CallQueue,
    resolve_policy,
)
from deepaas.engine.window import ADAPTIVE_CAP_S, AdaptiveWindow, FixedWindow
from deepaas.model.v2.wrapper import ModelError, ModelWrapper
from deepaas.options import MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE


def test_no_predict_batch_is_never_batched():
    assert resolve_policy(False, {"max_batch_size": 8}, 16, 5) == BatchPolicy()


def test_plugin_attribute_is_used():
    policy = resolve_policy(True, {"max_batch_size": 8, "max_delay_ms": 5}, None, None)
    assert policy == BatchPolicy(max_batch_size=8, max_delay=0.005)


def test_flags_override_the_plugin():
    policy = resolve_policy(True, {"max_batch_size": 8, "max_delay_ms": 5}, 2, 0)
    assert policy == BatchPolicy(max_batch_size=2, max_delay=0.0)
    assert not resolve_policy(True, {"max_batch_size": 8}, 1, None).batched


def test_defaults_without_attribute():
    # The default window is adaptive (max_delay None); it was 0 before issue 14.
    policy = resolve_policy(True, None, None, None)
    assert policy == BatchPolicy(max_batch_size=DEFAULT_BATCH_SIZE, max_delay=None)
    assert (policy.window_kind, policy.window_bound) == ("adaptive", ADAPTIVE_CAP_S)


def test_a_delay_from_the_plugin_or_the_flag_is_a_fixed_window():
    assert resolve_policy(True, {"max_batch_size": 8}, None, None).max_delay is None
    own = resolve_policy(True, {"max_delay_ms": 0}, None, None)
    assert (own.max_delay, own.window_kind, own.window_bound) == (0.0, "fixed", 0.0)
    flag = resolve_policy(True, {"max_batch_size": 8}, None, 5)
    assert (flag.max_delay, flag.window_kind) == (0.005, "fixed")
    assert isinstance(CallQueue(flag).window, FixedWindow)
    assert isinstance(
        CallQueue(resolve_policy(True, {}, None, None)).window, AdaptiveWindow
    )


def test_a_model_that_does_not_batch_has_no_window():
    policy = resolve_policy(True, {"max_batch_size": 8}, 1, None)
    assert (policy.window_kind, policy.window_bound) == ("none", 0.0)
    assert isinstance(CallQueue(policy).window, FixedWindow)


class _Plugin:
    def __init__(self, batching):
        self.batching = batching

    def predict_batch(self, batch):
        return batch


@pytest.mark.parametrize(
    ("batching", "key"),
    [
        ([8], "batching must be a dict"),
        ({"size": 8}, "batching must be a dict"),
        ({"max_batch_size": 0}, "batching max_batch_size"),
        ({"max_batch_size": -4}, "batching max_batch_size"),
        ({"max_batch_size": 10**9}, "batching max_batch_size"),
        ({"max_batch_size": MAX_BATCH_SIZE + 1}, "batching max_batch_size"),
        ({"max_batch_size": "8"}, "batching max_batch_size"),
        ({"max_batch_size": 8.0}, "batching max_batch_size"),
        ({"max_batch_size": True}, "batching max_batch_size"),
        ({"max_delay_ms": -1}, "batching max_delay_ms"),
        ({"max_delay_ms": 86_400_000}, "batching max_delay_ms"),  # a day
        ({"max_delay_ms": MAX_BATCH_DELAY_MS + 0.5}, "batching max_delay_ms"),
        ({"max_delay_ms": math.inf}, "batching max_delay_ms"),
        ({"max_delay_ms": math.nan}, "batching max_delay_ms"),
        ({"max_delay_ms": "5"}, "batching max_delay_ms"),
        ({"max_delay_ms": False}, "batching max_delay_ms"),
    ],
)
def test_invalid_batching_attribute_stops_loading(batching, key):
    """A start-up error that names the model, the key and the value."""
    with pytest.raises(ModelError, match=f"^model 'm': {key}") as caught:
        ModelWrapper("m", _Plugin(batching))
    value = batching.get(key.split()[-1]) if isinstance(batching, dict) else None
    assert str(caught.value).endswith(
        f"got {value if value is not None else batching!r}"
    )


@pytest.mark.parametrize(
    "batching",
    [
        {"max_batch_size": 1},
        {"max_batch_size": MAX_BATCH_SIZE},
        {"max_delay_ms": 0},  # explicit: never wait
        {"max_delay_ms": 2.5},
        {"max_delay_ms": MAX_BATCH_DELAY_MS},
        {},
    ],
)
def test_sane_batching_attribute_loads(batching):
    assert ModelWrapper("m", _Plugin(batching)).batching == batching


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be from 1"),
        ({"max_batch_size": 10**9}, "max_batch_size must be from 1"),
        ({"max_batch_delay": -1}, "max_batch_delay must be from 0"),
        ({"max_batch_delay": 86_400_000}, "max_batch_delay must be from 0"),
    ],
)
def test_absurd_batching_flags_are_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        Settings(**flags)


def test_predict_batch_alone_serves_single_predictions():
    wrapper = ModelWrapper("m", _Plugin({"max_batch_size": 4}))
    assert wrapper.has_predict
    assert wrapper.predict({"x": 1}) == {"x": 1}
