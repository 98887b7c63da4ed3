"""Three ``deepaas-run`` replicas behind a real HAProxy, under steady load.

HAProxy checks ``GET /readyz`` on each replica (as a Kubernetes readiness
probe does) and balances 32 keep-alive client connections over them:

- a rolling restart (each replica in turn gets SIGTERM, drains and is
  started again on its port) with ``--drain-delay`` longer than the health
  check's interval times its fall count fails no request: the replica turns
  unready, HAProxy takes it out while it still serves, then it drains;
- SIGKILL of one replica fails only requests that were in flight when it
  died (at most the connections it held), and none sent after HAProxy's
  next health check took it out (connection failures in between are
  retried on another replica).

Without ``--drain-delay`` the rolling restart fails requests (the replica
refuses work before HAProxy notices): ``benchmarks/fleet.py`` shows it; it
is not a test, the count depends on timing. Order comes from HAProxy's own
view of its servers and the replicas' state, polled with deadlines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import DeepaasRun, until
from tests.fleet import Fleet, HealthCheck, Load, find_haproxy, summary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        find_haproxy() is None,
        reason="haproxy is not installed (apt-get install haproxy): the fleet "
        "test needs a real load balancer",
    ),
]

REPLICAS = 3
SERVER_ARGS = [
    "--plugin", "faults=tests.plugins.faults",
    "--devices", "cpu",
]  # fmt: skip
CONNECTIONS = 32
CHECK = HealthCheck(inter_s=0.5, fall=2, rise=2)  # out within ~1 s
# Well above CHECK.out_within_s: a check on a loaded 2-core machine may be
# late, and the delay only costs time at each restart.
DRAIN_DELAY_S = 4.0
SHUTDOWN_TIMEOUT_S = 10.0
STOP_BUDGET_S = 5.0
# Each prediction sleeps 10 ms in the worker: steady load that leaves the CPU
# to the restarts (a model waiting on a GPU looks the same to the server).
PREDICT = "/v2/models/faults/predict/?mode=sleep&seconds=0.01"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    args = [
        *SERVER_ARGS,
        f"--drain-delay={DRAIN_DELAY_S:g}",
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S:g}",
    ]
    fleet = Fleet(tmp_path, REPLICAS, args, check=CHECK)
    try:
        yield fleet
    finally:
        fleet.close()


def predictions_served(replica: DeepaasRun) -> float:
    """Predictions this replica answered 200, from its /metrics."""
    status, text = replica.request("GET", "/metrics")
    assert status == 200
    pattern = r'^deepaas_requests_total\{(?=[^}]*code="200")(?=[^}]*endpoint="predict")'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if re.match(pattern, line)
    )


def test_rolling_restart_under_load_fails_no_request(fleet: Fleet) -> None:
    assert CHECK.out_within_s < DRAIN_DELAY_S
    bound = DRAIN_DELAY_S + SHUTDOWN_TIMEOUT_S + STOP_BUDGET_S
    with Load(fleet.url + PREDICT, CONNECTIONS) as load:
        load.wait_answered(4 * CONNECTIONS, "the load is steady")
        for i in range(REPLICAS):
            exited_after = fleet.restart(i, exit_within=bound)
            # It served through the delay, then drained its requests in flight.
            assert DRAIN_DELAY_S <= exited_after <= bound, fleet.replicas[i].output()
            until(
                lambda i=i: predictions_served(fleet.replicas[i]) > 0,
                f"the restarted replica {i} serves traffic again",
            )
        load.wait_answered(4 * CONNECTIONS, "the load goes on")
        outcomes = load.stop()
    failures = [o for o in outcomes if not o.ok]
    assert summary(failures) == {}, failures[:5]
    assert len(outcomes) > 1000  # steady load all along (~250 requests/s)


def test_sigkill_fails_only_requests_in_flight_on_the_replica(fleet: Fleet) -> None:
    balancer = fleet.balancer
    with Load(fleet.url + PREDICT, CONNECTIONS) as load:
        load.wait_answered(4 * CONNECTIONS, "the load is steady")
        killed_at = time.monotonic()
        fleet.kill(1)
        down_at = balancer.wait_status("r1", "DOWN")
        load.wait_answered(4 * CONNECTIONS, "the load goes on without it")
        outcomes = load.stop()
    failures = [o for o in outcomes if not o.ok]
    # Requests it held when it died; none failed before, none sent after
    # HAProxy's health check took it out.
    assert len(failures) <= CONNECTIONS, summary(failures)
    assert [o for o in failures if o.ended < killed_at] == []
    assert [o for o in failures if o.started >= down_at] == []
    assert sum(o.ok for o in outcomes if o.started >= down_at) >= 4 * CONNECTIONS
