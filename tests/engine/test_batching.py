"""Dynamic batching: batches form from the queue; each result finds its request."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.timeout(60)

PREDICT = "/v2/models/batcher/predict/"


async def _predict(client, **params):
    resp = await client.post(PREDICT, params=params)
    return resp.status, await resp.json()


async def test_concurrent_requests_are_batched_and_routed(engine_client):
    client, _ = await engine_client("batcher")
    # The first request keeps the worker busy while the next ones queue up.
    first = asyncio.ensure_future(_predict(client, x=100, nap=0.5))
    await asyncio.sleep(0.2)
    rest = [asyncio.ensure_future(_predict(client, x=i)) for i in range(8)]
    assert (await first)[0] == 200
    results = await asyncio.gather(*rest)
    assert [status for status, _ in results] == [200] * 8
    assert [body["predictions"]["x"] for _, body in results] == list(range(8))
    sizes = [body["predictions"]["batch_size"] for _, body in results]
    assert max(sizes) == 4  # the plugin's max_batch_size
    assert all(size > 1 for size in sizes)


async def test_idle_request_is_not_delayed_or_batched(engine_client):
    client, _ = await engine_client("batcher")
    status, body = await _predict(client, x=5)
    assert status == 200
    assert body["predictions"]["batch_size"] == 1


async def test_flag_overrides_plugin_batch_size(engine_client):
    client, runtime = await engine_client("batcher", max_batch_size=2)
    assert runtime.queue.policy.max_batch_size == 2
    first = asyncio.ensure_future(_predict(client, x=100, nap=0.5))
    await asyncio.sleep(0.2)
    results = await asyncio.gather(*[_predict(client, x=i) for i in range(6)])
    await first
    assert {body["predictions"]["batch_size"] for _, body in results} == {2}


async def test_max_batch_size_one_disables_batching(engine_client):
    client, runtime = await engine_client("batcher", max_batch_size=1)
    assert not runtime.queue.policy.batched
    first = asyncio.ensure_future(_predict(client, x=100, nap=0.3))
    await asyncio.sleep(0.1)
    results = await asyncio.gather(*[_predict(client, x=i) for i in range(4)])
    await first
    assert {body["predictions"]["batch_size"] for _, body in results} == {1}


async def test_delay_waits_for_companions(engine_client):
    client, _ = await engine_client("batcher", max_batch_delay=300)
    # Sent 50 ms apart to an idle server: the delay lets them share a batch.
    first = asyncio.ensure_future(_predict(client, x=1))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(_predict(client, x=2))
    (s1, b1), (s2, b2) = await asyncio.gather(first, second)
    assert (s1, s2) == (200, 200)
    assert b1["predictions"]["batch_size"] == b2["predictions"]["batch_size"] == 2


async def test_exception_instance_fails_only_its_request(engine_client):
    client, _ = await engine_client("batcher")
    first = asyncio.ensure_future(_predict(client, x=100, nap=0.5))
    await asyncio.sleep(0.2)
    results = await asyncio.gather(
        _predict(client, x=1), _predict(client, x=-1), _predict(client, x=3)
    )
    await first
    (s1, b1), (s2, b2), (s3, _) = results
    assert (s1, s3) == (200, 200)
    assert b1["predictions"]["batch_size"] == 3  # they did share a batch
    assert s2 == 500
    assert b2 == {"message": "ValueError: bad item -1"}


async def test_batch_exception_fails_every_request_of_the_batch(engine_client):
    client, _ = await engine_client("batcher")
    first = asyncio.ensure_future(_predict(client, x=100, nap=0.5))
    await asyncio.sleep(0.2)
    results = await asyncio.gather(
        _predict(client, x=1), _predict(client, x=-2), _predict(client, x=3)
    )
    await first
    assert [status for status, _ in results] == [500, 500, 500]
    assert {body["message"] for _, body in results} == {
        "RuntimeError: the whole batch failed"
    }
    # The worker survives: the next request is fine.
    assert (await _predict(client, x=4))[0] == 200


async def test_wrong_number_of_results_is_a_clear_error(engine_client):
    client, _ = await engine_client("bad_batch")

    async def one():
        resp = await client.post("/v2/models/bad_batch/predict/")
        return resp.status, await resp.json()

    first = asyncio.ensure_future(one())
    await asyncio.sleep(0.1)
    results = await asyncio.gather(*[one() for _ in range(4)])
    # Alone, the first request got its one result; the batch of four did not.
    assert (await first)[0] == 200
    assert [status for status, _ in results] == [500] * 4
    message = results[0][1]["message"]
    assert "returned 1 results for 4 requests" in message
    assert "one result per request" in message
