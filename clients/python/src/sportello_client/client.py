"""The wrapper: one gateway channel, typed results, errors with their details."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Iterable, Iterator, Optional

import grpc

from google.rpc import error_details_pb2, status_pb2
from sportello.identity.v1 import identity_pb2, identity_pb2_grpc
from sportello.notify.v1 import notify_pb2, notify_pb2_grpc
from sportello.privacy.v1 import privacy_pb2, privacy_pb2_grpc


@dataclasses.dataclass(frozen=True)
class Session:
    """A logged-in session: send `access_token` as the bearer of later calls."""

    access_token: str
    refresh_token: str
    level: str

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.access_token}")]


@dataclasses.dataclass(frozen=True)
class Message:
    """One message sent to the citizen, as notify-svc shows it (addresses masked)."""

    message_id: str
    template: str
    channel: str
    status: str
    created_at: Optional[datetime.datetime]


@dataclasses.dataclass(frozen=True)
class DataAccess:
    """One look at, or change of, the citizen's data: when, by whom (a staff member only as a
    pseudonym of this citizen's own, with office and role), what, why, and how it ended. The
    labels are in Italian, as the portal shows them."""

    at: Optional[datetime.datetime]
    source: str
    role: str
    role_label: str
    office: str
    operator: str
    action: str
    action_label: str
    reason: str
    outcome: str
    outcome_label: str


class SportelloError(Exception):
    """A refused call: the gRPC code, the message, and the details the service attached."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, field_violations: list[tuple[str, str]]):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.field_violations = field_violations

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.field_violations]

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "SportelloError":
        reason, violations = "", []
        for key, value in error.trailing_metadata() or ():
            if key != "grpc-status-details-bin":
                continue
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations += [(v.field, v.description) for v in bad.field_violations]
                elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
        return cls(error.code(), error.details() or "", reason, violations)


def _time(ts) -> Optional[datetime.datetime]:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=datetime.timezone.utc)


LOCAL_GATEWAY = "127.0.0.1:50051"


def gateway_target(gateway: str) -> tuple[str, bool]:
    """The gateway as the `sportello` CLIs name it (`--gateway`, `SPORTELLO_GATEWAY`):
    `host:port`, or a URL `http://host:port` / `https://host:port`. Returns the `host:port` gRPC
    dials and whether the URL asked for TLS; anything else raises ValueError."""
    text = gateway.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    scheme = scheme.lower()
    rest = rest[:-1] if rest.endswith("/") else rest
    host, colon, port = rest.rpartition(":")
    bare_without_port = not sep and not (colon and port.isdigit())
    if (scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#@")
            or bare_without_port or (colon and not port.isdigit()) or (colon and not host)):
        raise ValueError(f"{gateway!r} is not a gateway: give host:port or http://host:port")
    if not colon:
        rest = f"{rest}:{443 if scheme == 'https' else 80}"
    return rest, scheme == "https"


class Sportello:
    """Sportello through its gateway: `host:port` or `http://host:port` (plaintext, as on
    loopback), or `https://host:port` or `credentials` for TLS. `Sportello.from_env()` takes
    `SPORTELLO_GATEWAY`, as the `sportello` CLIs do."""

    def __init__(self, target: str = LOCAL_GATEWAY, *, timeout: float = 10.0,
                 credentials: Optional[grpc.ChannelCredentials] = None) -> None:
        address, tls = gateway_target(target)
        if tls and credentials is None:
            credentials = grpc.ssl_channel_credentials()
        self._channel = (grpc.secure_channel(address, credentials) if credentials
                         else grpc.insecure_channel(address))
        self._identity = identity_pb2_grpc.IdentityServiceStub(self._channel)
        self._notify = notify_pb2_grpc.NotifyServiceStub(self._channel)
        self._privacy = privacy_pb2_grpc.PrivacyServiceStub(self._channel)
        self._timeout = timeout

    @classmethod
    def from_env(cls, **kwargs) -> "Sportello":
        """The gateway `SPORTELLO_GATEWAY` names, else the local suite's."""
        return cls(os.environ.get("SPORTELLO_GATEWAY", LOCAL_GATEWAY), **kwargs)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Sportello":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _call(self, method, request, metadata: Iterable[tuple[str, str]] = ()):
        try:
            return method(request, timeout=self._timeout, metadata=list(metadata))
        except grpc.RpcError as error:
            raise SportelloError.from_rpc_error(error) from None

    def request_pin(self, request: identity_pb2.RequestPinRequest) -> identity_pb2.RequestPinResponse:
        """Files a PIN request (the portal's whole form); the halves go to the citizen."""
        return self._call(self._identity.RequestPin, request)

    def login_with_pin(self, fiscal_code: str, pin: str) -> Session:
        """Logs in with a PIN: the first half (simplified) or the citizen's own (ordinary)."""
        reply = self._call(
            self._identity.LoginWithPin,
            identity_pb2.LoginWithPinRequest(fiscal_code=fiscal_code, pin=pin),
        )
        s = reply.session
        level = identity_pb2.CredentialLevel.Name(s.level)
        return Session(access_token=s.access_token, refresh_token=s.refresh_token, level=level)

    def list_my_messages(self, session: Session) -> list[Message]:
        """The messages sent to the logged-in citizen, newest first."""
        reply = self._call(self._notify.ListMyMessages, notify_pb2.ListMyMessagesRequest(),
                           session.metadata())
        return [
            Message(
                message_id=m.message_id,
                template=m.template,
                channel=notify_pb2.Channel.Name(m.channel),
                status=notify_pb2.MessageStatus.Name(m.status),
                created_at=_time(m.created_at),
            )
            for m in reply.messages
        ]

    def list_my_data_access(self, session: Session, *, sources: Iterable[str] = (),
                            since: Optional[datetime.datetime] = None,
                            until: Optional[datetime.datetime] = None,
                            page_size: int = 0) -> list[DataAccess]:
        """Who looked at the logged-in citizen's data, newest first, every page: staff,
        patronati, the back office and the services' automatic steps. `sources` narrows it to
        services by name ("identity", "claims", "notify"); `since`/`until` to a period."""
        request = privacy_pb2.ListMyDataAccessRequest(
            page_size=page_size,
            sources=[privacy_pb2.Source.Value(f"SOURCE_{s.upper()}") for s in sources],
        )
        if since is not None:
            request.since.FromDatetime(since)
        if until is not None:
            request.until.FromDatetime(until)
        entries: list[DataAccess] = []
        while True:
            reply = self._call(self._privacy.ListMyDataAccess, request, session.metadata())
            entries += [
                DataAccess(
                    at=_time(e.at),
                    source=privacy_pb2.Source.Name(e.source),
                    role=privacy_pb2.ActorRole.Name(e.actor_role),
                    role_label=e.actor_role_label,
                    office=e.office,
                    operator=e.operator_pseudonym,
                    action=e.action,
                    action_label=e.action_label,
                    reason=e.reason,
                    outcome=e.outcome,
                    outcome_label=e.outcome_label,
                )
                for e in reply.entries
            ]
            if not reply.next_page_token:
                return entries
            request.page_token = reply.next_page_token

    def export_my_data(self, session: Session) -> Iterator[dict]:
        """Everything held about the logged-in citizen (an ordinary PIN or more), one record
        at a time as the gateway streams it: dicts with "kind" and "source". The export is
        recorded and the citizen told on the contacts on file."""
        try:
            stream = self._privacy.ExportMyData(privacy_pb2.ExportMyDataRequest(),
                                                metadata=session.metadata())
            for chunk in stream:
                for line in chunk.data.decode("utf-8").splitlines():
                    if line:
                        yield json.loads(line)
        except grpc.RpcError as error:
            raise SportelloError.from_rpc_error(error) from None
