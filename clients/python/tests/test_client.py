"""The client against a running suite (`sportello up`): SPORTELLO_GATEWAY names its gateway and
SPORTELLO_DATA_DIR its data directory, whose local SMS sink holds the first half a citizen
would read on their phone. `.ci/run` starts the suite and runs these."""

import json
import os
import pathlib
import time

import grpc
import pytest

from sportello_client import Sportello, SportelloError
from sportello.identity.v1 import identity_pb2

GATEWAY = os.environ.get("SPORTELLO_GATEWAY", "127.0.0.1:50051")
DATA_DIR = pathlib.Path(os.environ.get("SPORTELLO_DATA_DIR", "data"))

# Giulia Bianchi, on the demo register `sportello up` loads.
BIANCHI = "BNCGLI90C55H501W"


def demo_form(fiscal_code, person, address, mobile_phone, email) -> identity_pb2.RequestPinRequest:
    """A PIN request for a resident of the demo register, as they would fill it in.

    person: (surname, given name, (year, month, day), sex, birth province, birth municipality);
    address: (street, number, postal code, province, municipality).
    """
    surname, given_name, (year, month, day), sex, birth_province, birth_municipality = person
    street, street_number, postal_code, province, municipality = address
    return identity_pb2.RequestPinRequest(
        fiscal_code=fiscal_code,
        personal_data=identity_pb2.PersonalData(
            surname=surname, given_name=given_name,
            birth_date=identity_pb2.Date(year=year, month=month, day=day),
            sex=sex, birth_province=birth_province, birth_municipality=birth_municipality,
        ),
        residence=identity_pb2.Residence(italy=identity_pb2.ItalianAddress(
            street=street, street_number=street_number, postal_code=postal_code,
            province=province, municipality=municipality,
        )),
        contacts=identity_pb2.Contacts(
            mobile_phone=mobile_phone, email=email,
            preferred_time_slot=identity_pb2.TIME_SLOT_MORNING,
        ),
        first_half_channel=identity_pb2.DELIVERY_CHANNEL_SMS,
    )


def bianchi_form() -> identity_pb2.RequestPinRequest:
    return demo_form(
        BIANCHI,
        ("Bianchi", "Giulia", (1990, 3, 15), identity_pb2.SEX_FEMALE, "RM", "Roma"),
        ("Via Dante", "12", "20121", "MI", "Milano"),
        "+39 333 7654321", "giulia.bianchi@example.it",
    )


def first_half_sent_to(phone_digits: str, timeout: float = 20.0) -> str:
    """The PIN half in the last SMS the suite's local sink got for that phone."""
    sink = DATA_DIR / "outbox" / "sms.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.exists():
            for line in reversed(sink.read_text().splitlines()):
                sms = json.loads(line)
                if sms.get("to", "").replace(" ", "").endswith(phone_digits):
                    after = sms["text"].split(" è ", 1)[1]
                    return after.split(".")[0].split()[0]
        time.sleep(0.2)
    raise AssertionError(f"no SMS for {phone_digits} in {sink}")


@pytest.fixture()
def sportello():
    with Sportello(GATEWAY) as client:
        yield client


def test_a_bad_form_comes_back_with_its_field_violations(sportello):
    form = bianchi_form()
    form.fiscal_code = "BNCGLI90C55H501X"
    form.contacts.email = "not an address"
    with pytest.raises(SportelloError) as refused:
        sportello.request_pin(form)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "fiscal_code" in refused.value.fields
    assert "contacts.email" in refused.value.fields


def test_a_citizen_requests_a_pin_logs_in_with_the_first_half_and_reads_their_messages(sportello):
    sportello.request_pin(bianchi_form())
    half = first_half_sent_to("7654321")
    session = sportello.login_with_pin(BIANCHI, half)
    assert session.level == "CREDENTIAL_LEVEL_SIMPLIFIED"
    messages = sportello.list_my_messages(session)
    assert "PIN_FIRST_HALF" in {m.template for m in messages}
    assert all(m.created_at is not None for m in messages)


def test_a_wrong_pin_is_unauthenticated_with_its_reason(sportello):
    with pytest.raises(SportelloError) as refused:
        sportello.login_with_pin(BIANCHI, "ZZZZZZZZ")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.reason == "INVALID_CREDENTIALS"


# Giuseppe Verdi, also on the demo register.
VERDI = "VRDGPP62L22F839E"


def verdi_form() -> identity_pb2.RequestPinRequest:
    return demo_form(
        VERDI,
        ("Verdi", "Giuseppe", (1962, 7, 22), identity_pb2.SEX_MALE, "NA", "Napoli"),
        ("Via Toledo", "256", "80134", "NA", "Napoli"),
        "+39 333 1112223", "giuseppe.verdi@example.it",
    )


def test_a_citizen_sees_who_touched_their_data_and_a_simplified_pin_exports_nothing(sportello):
    sportello.request_pin(verdi_form())
    session = sportello.login_with_pin(VERDI, first_half_sent_to("1112223"))
    entries = sportello.list_my_data_access(session)
    assert entries, "the citizen's own PIN request at least"
    request = next(e for e in entries if e.action == "REQUEST_PIN")
    assert request.role == "ACTOR_ROLE_CITIZEN" and request.action_label.startswith("Richiesta")
    assert all(e.at is not None for e in entries)
    assert [e.at for e in entries] == sorted((e.at for e in entries), reverse=True)
    only_notify = sportello.list_my_data_access(session, sources=["notify"])
    assert all(e.source == "SOURCE_NOTIFY" for e in only_notify)
    with pytest.raises(SportelloError) as refused:
        list(sportello.export_my_data(session))
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
