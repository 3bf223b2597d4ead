"""A small typed client of Sportello, over its gRPC contract: log in, request a PIN, read one's
messages, see who looked at one's data and take it away. Errors come back as `SportelloError`, with the field violations and the reason the
service gave. The stubs are generated from the contract by `generate.py`."""

import os
import sys

# The generated modules import each other by their proto packages (`sportello.identity.v1`).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_gen"))

from .client import (  # noqa: E402
    DataAccess, Message, Session, Sportello, SportelloError, gateway_target,
)

__all__ = ["DataAccess", "Message", "Session", "Sportello", "SportelloError", "gateway_target"]
