"""Outbox + submission against a fake FHIR server: nothing lost, nothing written twice.

``FakeFhir`` is a small working FHIR store behind ``responses`` (search by
identifier / target / _tag / entity, create with If-None-Exist, update with
If-Match, transactions with urn:uuid rewriting). Each test breaks one thing.
Every resource it receives is checked against R4B and the app's profiles.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlparse

import pytest
import requests
import responses
from fhir.resources.R4B import get_fhir_model_class

from app.errors import AppError, NotBuiltError, TemporaryUpstreamError
from app.fhir.client import FhirClient
from app.fhir.vendors import PROFILES, ServerProfile
from app.store.db import create_tables, make_engine, make_sessionmaker
from app.store.models import Vault
from app.writeback import profiles
from app.writeback.builders import IDENTIFIER_SYSTEM, DraftSpec, SourceDocument
from app.writeback.outbox import Outbox
from app.writeback.submit import (
    Submitter,
    WriteContext,
    build_transaction,
    outbox_payload,
    retry_due,
    spec_from_json,
    spec_to_json,
    submit,
)

BASE = "https://ehr.test/fhir"
CANARY = "Zyxwend Canarywhistle"
GENERIC_NO_TX = ServerProfile("generic", transactions=False, preliminary_drafts=True,
                              audit_event_create=True, requires_encounter=False,
                              no_cache_readback=True)


# --- a working fake FHIR server ------------------------------------------------------------------
@dataclass
class Fault:
    method: str
    target: str  # resource type, "transaction", or "search:<Type>"
    status: int | str  # HTTP status, "timeout" or "connection"
    after_commit: bool = False  # the server did the work, the answer was lost
    times: int = 1


@dataclass
class FakeFhir:
    base: str = BASE
    empty_201: bool = False  # Epic: 201 without a body (Location only)
    store: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- data --
    def resources(self, rtype: str) -> list[dict]:
        return [versions[-1] for versions in self.store.get(rtype, {}).values()]

    def drafts(self, run_id: str) -> list[dict]:
        return [d for d in self.resources("DocumentReference")
                if {"system": IDENTIFIER_SYSTEM, "value": run_id} in d.get("identifier", [])]

    def _save(self, resource: dict, rid: str | None = None) -> dict:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert profiles.check(resource) == [], profiles.check(resource)
        res = copy.deepcopy(resource)
        rtype = res["resourceType"]
        rid = rid or res.get("id") or f"{rtype[:3].lower()}{next(self.ids)}"
        versions = self.store.setdefault(rtype, {}).setdefault(rid, [])
        res["id"] = rid
        res["meta"] = dict(res.get("meta") or {}, versionId=str(len(versions) + 1))
        versions.append(res)
        return res

    def _match(self, res: dict, params: list[tuple[str, str]]) -> bool:
        for key, value in params:
            if key in ("_count", "_sort"):
                continue
            if key == "identifier":
                system, _, val = value.partition("|")
                if not any(i.get("system") == system and i.get("value") == val
                           for i in res.get("identifier") or []):
                    return False
            elif key in ("target", "entity"):
                refs = [r.get("reference", "") for r in res.get("target") or []] if key == "target" else [
                    (e.get("what") or {}).get("reference", "") for e in res.get("entity") or []]
                if not any(r == value or r.startswith(value + "/_history/") for r in refs):
                    return False
            elif key == "_tag":
                system, _, code = value.partition("|")
                if not any(t.get("system") == system and t.get("code") == code
                           for t in (res.get("meta") or {}).get("tag") or []):
                    return False
            elif key == "action":
                if res.get("action") != value:
                    return False
            else:
                raise AssertionError(f"fake server: unsupported search parameter {key}")
        return True

    def search(self, rtype: str, params: list[tuple[str, str]]) -> list[dict]:
        return [r for r in self.resources(rtype) if self._match(r, params)]

    # -- HTTP --
    def _fault(self, method: str, target: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.target == target and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _fail(self, fault: Fault):  # type: ignore[no-untyped-def]
        if fault.status == "timeout":
            raise requests.ReadTimeout("fake timeout")
        if fault.status == "connection":
            raise requests.ConnectionError("fake connection reset")
        outcome = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": "conflict" if fault.status in (409, 412)
                              else "exception"}]}
        return fault.status, {"Content-Type": "application/fhir+json"}, json.dumps(outcome)

    def _created(self, res: dict, status: int = 201):  # type: ignore[no-untyped-def]
        loc = f"{self.base}/{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}"
        headers = {"Location": loc, "Content-Type": "application/fhir+json"}
        return status, headers, "" if self.empty_201 else json.dumps(res)

    def handle(self, request):  # type: ignore[no-untyped-def]
        url = urlparse(request.url)
        path = url.path[len(urlparse(self.base).path):].strip("/")
        parts = path.split("/") if path else []
        params = parse_qsl(url.query)
        body = json.loads(request.body) if request.body else None
        method = request.method
        self.requests.append((method, path))
        if method == "POST" and not parts:
            target = "transaction"
        elif method == "GET" and len(parts) == 1:
            target = f"search:{parts[0]}"
        else:
            target = parts[0]
        fault = self._fault(method, target)
        if fault and not fault.after_commit:
            return self._fail(fault)
        result = self._dispatch(method, parts, params, body, request.headers)
        if fault:
            return self._fail(fault)
        return result

    def _dispatch(self, method, parts, params, body, headers):  # type: ignore[no-untyped-def]
        if method == "GET" and len(parts) == 1:
            entries = [{"resource": r, "search": {"mode": "match"}} for r in self.search(parts[0], params)]
            return 200, {}, json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries})
        if method == "GET" and len(parts) == 2:
            versions = self.store.get(parts[0], {}).get(parts[1])
            return (200, {}, json.dumps(versions[-1])) if versions else (404, {}, "")
        if method == "GET" and len(parts) == 4 and parts[2] == "_history":
            versions = self.store.get(parts[0], {}).get(parts[1]) or []
            match = [v for v in versions if v["meta"]["versionId"] == parts[3]]
            return (200, {}, json.dumps(match[0])) if match else (404, {}, "")
        if method == "POST" and len(parts) == 1:
            cond = headers.get("If-None-Exist")
            if cond:
                found = self.search(parts[0], parse_qsl(cond))
                if found:
                    return self._created(found[0], 200)
            return self._created(self._save(body))
        if method == "PUT" and len(parts) == 2:
            versions = self.store.get(parts[0], {}).get(parts[1])
            if not versions:
                return 404, {}, ""
            if_match = headers.get("If-Match")
            if if_match and if_match != f'W/"{versions[-1]["meta"]["versionId"]}"':
                return 412, {}, json.dumps({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "conflict"}]})
            return self._created(self._save(body, parts[1]), 200)
        if method == "POST" and not parts:
            return self._transaction(body)
        raise AssertionError(f"fake server: unsupported {method} /{'/'.join(parts)}")

    def _transaction(self, bundle: dict):  # type: ignore[no-untyped-def]
        snapshot = copy.deepcopy(self.store)
        mapping: dict[str, str] = {}
        existing: dict[str, dict] = {}
        for e in bundle["entry"]:
            cond = e["request"].get("ifNoneExist")
            found = self.search(e["request"]["url"], parse_qsl(cond)) if cond else []
            if found:
                existing[e["fullUrl"]] = found[0]
                mapping[e["fullUrl"]] = f"{found[0]['resourceType']}/{found[0]['id']}"
            else:
                rid = f"{e['resource']['resourceType'][:3].lower()}{next(self.ids)}"
                mapping[e["fullUrl"]] = f"{e['resource']['resourceType']}/{rid}"
        out = []
        try:
            for e in bundle["entry"]:
                if e["fullUrl"] in existing:
                    res, status = existing[e["fullUrl"]], "200 OK"
                else:
                    text = json.dumps(e["resource"])
                    for urn, ref in mapping.items():
                        text = text.replace(urn, ref)
                    res, status = self._save(json.loads(text), mapping[e["fullUrl"]].split("/")[1]), "201 Created"
                location = f"{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}"
                out.append({"resource": res, "response": {"status": status, "location": location}})
        except Exception:
            self.store = snapshot
            raise
        return 200, {}, json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": out})

    def install(self, rsps: responses.RequestsMock) -> None:
        for method in ("GET", "POST", "PUT"):
            rsps.add_callback(method, re.compile(re.escape(self.base) + r"(/.*)?(\?.*)?$"), self.handle)


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture
def maker(database_url):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)  # SQLite and PostgreSQL (tests/conftest.py)
    create_tables(engine)
    return make_sessionmaker(engine)


@pytest.fixture
def outbox(maker):  # type: ignore[no-untyped-def]
    return Outbox(maker, Vault(b"k"))


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    server = FakeFhir()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.install(rsps)
        yield server


def spec(run_id: str = "run-1", *, encounter_id: str | None = "enc-1") -> DraftSpec:
    return DraftSpec(run_id=run_id, task="summary", loinc_code="60591-5",
                     loinc_display="Patient summary Document",
                     text=f"{CANARY}: problem list (active): melanoma.", patient_id="p1",
                     encounter_id=encounter_id, author_reference="Practitioner/prac-1",
                     sources=(SourceDocument(id="doc-1", version="1"),),
                     created=datetime(2026, 11, 1, tzinfo=UTC), model_id="m", agent_version="a",
                     prompt_version="summary-v1")


CTX = WriteContext(client_id="c", token_jti="j", user_reference="Practitioner/prac-1", audit_on_server=True)


def client() -> FhirClient:
    return FhirClient(BASE, backoff_s=0.001, max_attempts=1)


def put(outbox: Outbox, run_id: str = "run-1", **kw: object) -> None:
    outbox.put(run_id, BASE, outbox_payload(spec(run_id, **kw), CTX))  # type: ignore[arg-type]


# --- tests --------------------------------------------------------------------------------
def test_transaction_shape() -> None:
    bundle = build_transaction(spec(), CTX, BASE)
    doc, dev, prov, audit = bundle["entry"]
    assert doc["request"]["ifNoneExist"].endswith("|run-1")
    assert dev["request"]["ifNoneExist"] == "identifier=urn:smart-draft-agent:ai-device|m@a"
    assert prov["resource"]["target"][0]["reference"] == doc["fullUrl"]
    assert any(a["who"]["reference"] == dev["fullUrl"] for a in prov["resource"]["agent"])
    assert audit["resource"]["resourceType"] == "AuditEvent"


def test_spec_round_trips_through_the_payload() -> None:
    s = DraftSpec(**{**spec().__dict__, "sources": (SourceDocument(
        "d", "2", (("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"),)),)})
    assert spec_from_json(json.loads(json.dumps(spec_to_json(s)))) == s


def test_transaction_writes_once_and_device_is_shared(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox, "run-1")
    put(outbox, "run-2")
    w1 = submit(client(), outbox, PROFILES["sekmet"], "run-1")
    w2 = submit(client(), outbox, PROFILES["sekmet"], "run-2")
    assert len(fake.drafts("run-1")) == 1 and len(fake.drafts("run-2")) == 1
    assert len(fake.resources("Device")) == 1 and w1["device"] == w2["device"]
    assert outbox.get("run-1")["state"] == "sent"
    # submitting a sent run again writes nothing
    before = len(fake.requests)
    assert submit(client(), outbox, PROFILES["sekmet"], "run-1") == w1
    assert len(fake.requests) == before


def test_server_failure_keeps_item_pending_then_retry_writes_once(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox)
    fake.faults.append(Fault("POST", "transaction", 503))
    with pytest.raises(TemporaryUpstreamError):
        submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert outbox.get("run-1")["state"] == "pending" and outbox.get("run-1")["attempts"] == 1
    assert fake.drafts("run-1") == []
    written = submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert written["document_reference"].startswith(f"DocumentReference/{fake.drafts('run-1')[0]['id']}/")
    assert outbox.get("run-1")["state"] == "sent"


def test_lost_acknowledgement_is_not_written_twice(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    """The server committed but the answer never arrived; the retry finds the draft."""
    put(outbox)
    fake.faults.append(Fault("POST", "transaction", "connection", after_commit=True))
    with pytest.raises(TemporaryUpstreamError):
        submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert len(fake.drafts("run-1")) == 1
    posts = sum(1 for m, _ in fake.requests if m == "POST")
    written = submit(client(), outbox, PROFILES["sekmet"], "run-1")
    assert sum(1 for m, _ in fake.requests if m == "POST") == posts
    assert written["document_reference"].startswith(f"DocumentReference/{fake.drafts('run-1')[0]['id']}")
    assert written["provenance"] and outbox.get("run-1")["state"] == "sent"


def test_outbox_put_is_idempotent_and_payload_encrypted(outbox, maker) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    assert outbox.put("run-1", BASE, {"resourceType": "Bundle", "marker": CANARY}) is True
    assert outbox.put("run-1", BASE, {"resourceType": "Bundle", "marker": "second"}) is False
    assert outbox.payload("run-1")["marker"] == CANARY
    with maker() as db:  # every column of the row as stored (SQLite or PostgreSQL)
        raw = " ".join(str(v) for row in db.execute(text("SELECT * FROM outbox")).all() for v in row)
    assert "Canarywhistle" not in raw
    assert "Canarywhistle" not in json.dumps(outbox.all())


@pytest.mark.parametrize("profile", [PROFILES["epic"], GENERIC_NO_TX], ids=["epic", "generic-no-tx"])
def test_sequence_without_transactions(outbox, fake, profile) -> None:  # type: ignore[no-untyped-def]
    put(outbox)
    written = submit(client(), outbox, profile, "run-1")
    assert not any(p == "" for m, p in fake.requests if m == "POST"), "no transaction may be sent"
    [doc] = fake.drafts("run-1")
    assert doc["docStatus"] == "preliminary"
    assert written["document_reference"] == f"DocumentReference/{doc['id']}/_history/1"
    [prov] = fake.resources("Provenance")
    assert prov["target"] == [{"reference": written["document_reference"]}]
    assert len(fake.resources("Device")) == 1
    audits = fake.resources("AuditEvent")
    assert len(audits) == (1 if profile.audit_event_create else 0)
    assert (written["audit_event"] is not None) == profile.audit_event_create
    # the order: search before create, the document before its Provenance
    order = [(m, p) for m, p in fake.requests]
    assert order.index(("GET", "DocumentReference")) < order.index(("POST", "DocumentReference"))
    assert order.index(("POST", "DocumentReference")) < order.index(("POST", "Provenance"))


def test_epic_empty_201_is_read_from_location(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    fake.empty_201 = True
    put(outbox)
    written = submit(client(), outbox, PROFILES["epic"], "run-1")
    [doc] = fake.drafts("run-1")
    assert written["document_reference"] == f"DocumentReference/{doc['id']}/_history/1"


def test_epic_without_encounter_stays_queued_with_a_reason(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox, encounter_id=None)
    with pytest.raises(AppError) as err:
        submit(client(), outbox, PROFILES["epic"], "run-1")
    assert err.value.code == "encounter_required"
    assert outbox.get("run-1")["state"] == "pending" and fake.requests == []


def test_oracle_holds_the_draft_until_approval(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox)
    written = submit(client(), outbox, PROFILES["oracle"], "run-1")
    assert set(written.values()) == {None}
    assert outbox.get("run-1")["state"] == "held_until_approval"
    assert fake.requests == [] and outbox.pending() == [] and len(outbox.held()) == 1
    # submitting again still holds it
    submit(client(), outbox, PROFILES["oracle"], "run-1")
    assert fake.requests == []


def test_not_built_error_is_gone() -> None:
    import app.writeback.submit as mod

    assert "NotBuiltError" not in open(mod.__file__, encoding="utf-8").read()
    assert NotBuiltError  # still exists for other features


def test_backoff_and_retry_due(outbox, fake, maker) -> None:  # type: ignore[no-untyped-def]
    clock = [1000.0]
    box = Outbox(maker, Vault(b"k"), clock=lambda: clock[0])
    put(box)
    fake.faults.append(Fault("POST", "transaction", 500))
    results = retry_due(lambda item: client(), box, lambda c: PROFILES["sekmet"])
    assert results[0]["error_code"] == "fhir_temporary" and box.get("run-1")["attempts"] == 1
    assert box.due() == []  # backing off
    assert retry_due(lambda item: client(), box, lambda c: PROFILES["sekmet"]) == []
    clock[0] += 31
    results = retry_due(lambda item: client(), box, lambda c: PROFILES["sekmet"])
    assert results[0]["state"] == "sent" and len(fake.drafts("run-1")) == 1


def test_failed_after_max_attempts_then_forced(outbox, fake, maker) -> None:  # type: ignore[no-untyped-def]
    from app.writeback import outbox as ob

    clock = [0.0]
    box = Outbox(maker, Vault(b"k"), clock=lambda: clock[0])
    put(box)
    fake.faults.append(Fault("POST", "transaction", 500, times=ob.MAX_ATTEMPTS))
    for _ in range(ob.MAX_ATTEMPTS):
        clock[0] += ob.BACKOFF_MAX_S + 1
        retry_due(lambda item: client(), box, lambda c: PROFILES["sekmet"])
    assert box.get("run-1")["state"] == "failed" and fake.drafts("run-1") == []
    clock[0] += ob.BACKOFF_MAX_S + 1
    assert retry_due(lambda item: client(), box, lambda c: PROFILES["sekmet"]) == []
    results = retry_due(lambda item: client(), box, lambda c: PROFILES["sekmet"], force=True)
    assert results[0]["state"] == "sent" and len(fake.drafts("run-1")) == 1


def test_written_resources_hold_no_text_outside_the_attachment(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    put(outbox)
    submit(client(), outbox, GENERIC_NO_TX, "run-1")
    for rtype, by_id in fake.store.items():
        for versions in by_id.values():
            for res in versions:
                text = json.dumps(res)
                if rtype == "DocumentReference":
                    data = res["content"][0]["attachment"]["data"]
                    assert CANARY in base64.b64decode(data).decode()
                    text = text.replace(data, "")
                assert "Canarywhistle" not in text, rtype


def test_submitter_hook_points(outbox, fake) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    put(outbox)
    Submitter(client(), outbox, GENERIC_NO_TX, hook=seen.append).submit("run-1")
    assert seen == [f"{w}:{k}" for k in ("document_reference", "device", "provenance", "audit_event")
                    for w in ("before", "after")]
