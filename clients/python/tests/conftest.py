"""Waits, once per test session, until the suite's gateway reports SERVING (its backends and
their databases answer), so that the tests do not race a suite that is still starting."""

import os
import time

import grpc
import pytest

from sportello_client import gateway_target

# `host:port` or `http://host:port`, as the `sportello` CLIs take it.
GATEWAY, _ = gateway_target(os.environ.get("SPORTELLO_GATEWAY", "127.0.0.1:50051"))
# grpc.health.v1.HealthCheckResponse{status: SERVING}, encoded.
SERVING = b"\x08\x01"


@pytest.fixture(scope="session", autouse=True)
def suite_serving():
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(GATEWAY) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        while True:
            try:
                if check(b"", timeout=2) == SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the suite at {GATEWAY} is not SERVING after 60 s")
            time.sleep(0.3)
