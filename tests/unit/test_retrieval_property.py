"""Property: a denied document never reaches the index, a search result, a tool result or a prompt.

Random charts (documents × security labels in every spelling × note types and
categories × inline or Binary attachments) are read by random roles with
random grants and task note types. Each document carries a unique marker word,
so a leak is visible wherever text goes: the texts handed to the embedder, the
index, ``PatientChart.search`` in every mode, the agent's tools
(``ChartTools.search`` and ``read_notes``), the text of the ``search_notes``
tool result that a model backend puts into its prompt, and the offline
backend's cited draft. Binary attachments of denied documents are never
fetched.

What is visible is decided by an oracle written here from the default role
policy (``app/retrieval/role_policy.yaml``), independently of
``policy.decide``. The embedder is ``HashingEmbedder``, a deterministic,
model-free stand-in with the same interface: this property is about the
permission filter, not embedding quality (test_retrieval_quality.py covers
that with the real model).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.agent.backends import get_backend
from app.agent.backends.llm import Pseudonymiser, run_tool
from app.agent.guard import Limits
from app.agent.runtime import ChartTools, run_task
from app.agent.tasks import get_task
from app.retrieval.bundles import BundleClient
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import PatientChart, load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

PATIENT = "pat-prop"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SYSTEM_SPELLINGS = {CONF: [CONF, "urn:oid:2.16.840.1.113883.5.25", None],
                    ACT: [ACT, "urn:oid:2.16.840.1.113883.5.4", "http://hl7.org/fhir/v3/ActCode", None]}
CLINICAL_TYPES = {"11488-4", "18842-5", "34117-2", "28570-0", "11506-3", "18748-4", "11502-2",
                  "11526-1", "11504-8", "34111-5", "34133-9", "57133-1", "60591-5", "34746-8"}
NURSE_TYPES = {"11506-3", "18842-5", "34111-5", "34746-8", "11502-2", "18748-4"}
TYPES = ["11506-3", "11488-4", "18748-4", "60591-5", "99999-9", None]
CATEGORIES = ["clinical-note", "summary", "other", None]
ROLES = ["clinician", "nurse", "behavioral-health", "admin", "default", "pharmacist", ""]
SCOPES = {
    "all": "patient/*.read",
    "docs": "patient/Patient.r patient/DocumentReference.rs patient/Binary.r",
    "v2-docs": "patient/Patient.rs patient/DocumentReference.rs",
    "no-docs": "patient/Patient.r patient/Condition.rs",
}
VOCAB = ("patient reports fatigue cough rash diarrhea colitis plan continue therapy tsh "
         "prednisone imaging stable improved assessment pembrolizumab nausea").split()


@dataclass(frozen=True)
class DocSpec:
    index: int
    type_code: str | None
    category: str | None
    confidentiality: str | None
    sensitivity: frozenset[str]
    law: bool
    spelling: int  # which system spelling the labels use
    in_meta: bool  # labels in meta.security rather than securityLabel
    binary: bool
    words: tuple[str, ...]
    date: str

    @property
    def id(self) -> str:
        return f"doc-{self.index}"

    @property
    def marker(self) -> str:
        return f"markerword{self.index}q"

    def text(self) -> str:
        half = len(self.words) // 2
        return (f"Assessment: {' '.join(self.words[:half])} {self.marker}.\n"
                f"Plan: {' '.join(self.words[half:])} {self.marker} continue.")


def visible(doc: DocSpec, role: str, scope: str, task_types: frozenset[str] | None) -> bool:
    """The oracle: what the default role policy lets this role see (written independently)."""
    if scope == "no-docs" or role not in ("clinician", "nurse", "behavioral-health"):
        return False
    if doc.law or doc.confidentiality == "V":
        return False
    if doc.confidentiality == "R" and role != "behavioral-health":
        return False
    may_see = {"PSY", "MH", "BH", "SUD", "ETH"} if role == "behavioral-health" else set()
    if not doc.sensitivity <= may_see:
        return False
    types = NURSE_TYPES if role == "nurse" else CLINICAL_TYPES
    if doc.type_code not in types:
        return False
    categories = {"clinical-note"} if role == "nurse" else {"clinical-note", "summary"}
    if doc.category is not None and doc.category not in categories:
        return False
    return task_types is None or doc.type_code in task_types


def _coding(system: str, code: str, spelling: int) -> dict:
    chosen = SYSTEM_SPELLINGS[system][spelling % len(SYSTEM_SPELLINGS[system])]
    return {"code": code} | ({"system": chosen} if chosen else {})


def resources(docs: list[DocSpec]) -> list[dict]:
    out: list[dict] = [{"resourceType": "Patient", "id": PATIENT, "gender": "female"}]
    for d in docs:
        labels = []
        if d.confidentiality:
            labels.append(_coding(CONF, d.confidentiality, d.spelling))
        labels += [_coding(ACT, code, d.spelling) for code in sorted(d.sensitivity)]
        if d.law:
            labels.append(_coding(ACT, "42CFRPart2", d.spelling))
        data = base64.b64encode(d.text().encode()).decode()
        attachment = {"contentType": "text/plain; charset=utf-8"}
        if d.binary:
            attachment["url"] = f"Binary/bin-{d.index}"
            out.append({"resourceType": "Binary", "id": f"bin-{d.index}",
                        "contentType": "text/plain", "data": data})
        else:
            attachment["data"] = data
        res: dict = {"resourceType": "DocumentReference", "id": d.id, "status": "current",
                     "subject": {"reference": f"Patient/{PATIENT}"}, "date": d.date,
                     "content": [{"attachment": attachment}],
                     "meta": {"versionId": "1"}}
        if d.type_code:
            res["type"] = {"coding": [{"system": "http://loinc.org", "code": d.type_code}]}
        if d.category:
            res["category"] = [{"coding": [{"code": d.category}]}]
        if labels and d.in_meta:
            res["meta"]["security"] = labels
        elif labels:
            res["securityLabel"] = [{"coding": [c]} for c in labels]
        out.append(res)
    return out


class RecordingClient(BundleClient):
    def __init__(self, items: list[dict]) -> None:
        super().__init__(items)
        self.fetched: list[str] = []

    def fetch_limited(self, url: str, *, accept: str, max_bytes: int):  # type: ignore[no-untyped-def]
        self.fetched.append(url)
        return super().fetch_limited(url, accept=accept, max_bytes=max_bytes)


@st.composite
def doc_specs(draw: st.DrawFn, index: int) -> DocSpec:
    return DocSpec(
        index=index, type_code=draw(st.sampled_from(TYPES)),
        category=draw(st.sampled_from(CATEGORIES)),
        confidentiality=draw(st.sampled_from([None, "N", "M", "R", "V"])),
        sensitivity=frozenset(draw(st.sets(st.sampled_from(["PSY", "SUD", "HIV", "ETH", "MH"]),
                                           max_size=2))),
        law=draw(st.booleans()), spelling=draw(st.integers(0, 3)), in_meta=draw(st.booleans()),
        binary=draw(st.booleans()),
        words=tuple(draw(st.lists(st.sampled_from(VOCAB), min_size=2, max_size=30))),
        date=f"2026-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}T10:00:00Z")


@st.composite
def charts(draw: st.DrawFn) -> tuple[list[DocSpec], str, str, frozenset[str] | None]:
    n = draw(st.integers(1, 7))
    docs = [draw(doc_specs(i)) for i in range(n)]
    role = draw(st.sampled_from(ROLES))
    scope = draw(st.sampled_from(sorted(SCOPES)))
    task_types = draw(st.sampled_from([None, frozenset({"11506-3"}),
                                       frozenset({"11506-3", "11488-4", "60591-5"})]))
    return docs, role, scope, task_types


def _everything_seen(chart: PatientChart, docs: list[DocSpec]) -> tuple[set[str], str]:
    """Document ids and text reachable through search, tools, the tool-result prompt, a draft."""
    ids: set[str] = set()
    texts: list[str] = []
    queries = [d.marker for d in docs] + [" ".join(d.words[:4]) for d in docs] + ["assessment plan"]
    for q in queries:
        for mode in ("dense", "sparse", "hybrid"):
            for r in chart.search(q, k=20, mode=mode):
                ids.add(r.chunk.document_id)
                texts.append(r.chunk.text)
    tools = ChartTools(chart, Limits(max_tool_calls=10_000, max_repeats=10_000))
    for q in queries:
        for r in tools.search(q, k=10):
            ids.add(r.chunk.document_id)
            texts.append(r.chunk.text)
        texts.append(run_tool("search_notes", {"query": q, "k": 10}, tools,
                              Pseudonymiser(enabled=False)))
    for c in tools.read_notes():
        ids.add(c.document_id)
        texts.append(c.text)
    draft = run_task(chart, get_task("summary"), get_backend("offline"))
    for s in draft.sentences:
        texts.append(s.text)
        ids.update(c.document for c in s.citations)
    ids.update(doc for doc, _ in draft.cited_documents())
    return ids, "\n".join(texts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(charts())
def test_denied_documents_never_leave_the_policy(case: tuple) -> None:
    docs, role, scope, task_types = case
    client = RecordingClient(resources(docs))
    embedder = HashingEmbedder()
    chart = load_chart(client, PATIENT, grants=Grants.parse(SCOPES[scope]), role=role,
                       policy=RolePolicy.default(), embedder=embedder, task_types=task_types)
    allowed = {d.id for d in docs if visible(d, role, scope, task_types)}
    denied = [d for d in docs if d.id not in allowed]

    assert set(chart.documents) == allowed  # the pipeline agrees with the oracle
    assert chart.index.document_ids <= allowed
    assert set(chart.texts) <= allowed
    embedded = "\n".join(embedder.seen)
    assert not any(d.marker in embedded for d in denied)  # never embedded
    assert not any(f"bin-{d.index}" in u for d in denied for u in client.fetched)  # never fetched
    assert sum(v for k, v in chart.counts.items() if k.startswith("denied:")) == (
        len(denied) if scope != "no-docs" else 0)  # no-docs: nothing is even listed

    ids, text = _everything_seen(chart, docs)
    assert ids <= allowed
    for d in denied:
        assert d.marker not in text
    for d in docs:
        if d.id in allowed:  # the allowed ones are findable (the filter is not "deny all")
            assert any(r.chunk.document_id == d.id for r in chart.search(d.marker, k=20,
                                                                         mode="sparse"))


@settings(max_examples=30, deadline=None)
@given(charts(), st.sampled_from(ROLES))
def test_query_time_filter_catches_a_policy_change_after_indexing(case: tuple, later_role: str,
                                                                  ) -> None:
    """Defence in depth: if the context narrows after indexing, search obeys the new decision."""
    docs, role, scope, task_types = case
    chart = load_chart(BundleClient(resources(docs)), PATIENT, grants=Grants.parse(SCOPES[scope]),
                       role=role, policy=RolePolicy.default(), embedder=HashingEmbedder(),
                       task_types=task_types)
    chart.context = type(chart.context)(role=later_role,
                                        can_read_documents=chart.context.can_read_documents,
                                        task_types=task_types)
    still = {d.id for d in docs if visible(d, later_role, scope, task_types)}
    ids, text = _everything_seen(chart, docs)
    assert ids <= still
    for d in docs:
        if d.id not in still:
            assert d.marker not in text
