"""Property: a denied resource never reaches the index, a search result, a tool result or a prompt.

Random charts (documents × security labels in every spelling × note types and
categories × inline or Binary attachments) are read by random roles with
random grants and task note types. Each document carries a unique marker word,
so a leak is visible wherever text goes: the texts handed to the embedder, the
index, ``PatientChart.search`` in every mode, the agent's tools
(``ChartTools.search`` and ``read_notes``), the text of the ``search_notes``
tool result that a model backend puts into its prompt, and the offline
backend's cited draft. Binary attachments of denied documents are never
fetched. Conditions and the Patient get labels too (issue 11): a denied
Condition's marker never reaches the chart, the tools, the prompt or a draft,
and a denied Patient's demographics are not there either.

Labels are drawn in every spelling: the canonical system, the known aliases,
variant spellings the spec does not use (``https``, upper case, trailing
slash, the ValueSet URL, no system), unknown codes (EMOTDIS, MST, lower-case
``r``) and random system/code text. Only the exact spellings are understood;
everything else denies (fail closed).

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
SYSTEM_SPELLINGS = {CONF: [CONF, "urn:oid:2.16.840.1.113883.5.25", "http://hl7.org/fhir/v3/Confidentiality",
                           None, CONF.replace("http:", "https:"), CONF.upper(), CONF + "/",
                           "http://terminology.hl7.org/ValueSet/v3-Confidentiality"],
                    ACT: [ACT, "urn:oid:2.16.840.1.113883.5.4", "http://hl7.org/fhir/v3/ActCode", None,
                          ACT.replace("http:", "https:"), ACT.lower(), ACT + "/",
                          "http://terminology.hl7.org/ValueSet/v3-ActCode"]}
UNDERSTOOD_SPELLINGS = 3  # the first three of each list are the spec's spellings; the rest deny
OBS = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
# labels that are never understood (an unknown code, a wrong case) or harmless (HTEST)
ODD_LABELS = [(ACT, "EMOTDIS"), (ACT, "MST"), (CONF, "r"), (CONF, "X"), (OBS, "HTEST")]
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
    odd: tuple[tuple[str, str], ...]  # extra labels: unknown codes, harmless, random text
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


def labels_pass(spec, role: str) -> bool:  # type: ignore[no-untyped-def]
    """The label part of the oracle, for notes, Conditions and the Patient alike."""
    if role not in ("clinician", "nurse", "behavioral-health"):
        return False
    has_labels = bool(spec.confidentiality or spec.sensitivity or spec.law)
    if has_labels and spec.spelling % len(SYSTEM_SPELLINGS[CONF]) >= UNDERSTOOD_SPELLINGS:
        return False  # a spelling the spec does not use: not understood, denied
    if any(label != (OBS, "HTEST") for label in spec.odd):
        return False  # unknown code or random text: denied; HTEST is harmless
    if spec.law or spec.confidentiality == "V":
        return False
    if spec.confidentiality == "R" and role != "behavioral-health":
        return False
    may_see = {"PSY", "MH", "BH", "SUD", "ETH"} if role == "behavioral-health" else set()
    return spec.sensitivity <= may_see


def visible(doc: DocSpec, role: str, scope: str, task_types: frozenset[str] | None) -> bool:
    """The oracle: what the default role policy lets this role see (written independently)."""
    if scope == "no-docs" or not labels_pass(doc, role):
        return False
    types = NURSE_TYPES if role == "nurse" else CLINICAL_TYPES
    if doc.type_code not in types:
        return False
    categories = {"clinical-note"} if role == "nurse" else {"clinical-note", "summary"}
    if doc.category is not None and doc.category not in categories:
        return False
    return task_types is None or doc.type_code in task_types


@dataclass(frozen=True)
class LabelSpec:
    """Labels of a Condition or the Patient (the same kinds as a note's)."""

    index: int
    confidentiality: str | None
    sensitivity: frozenset[str]
    law: bool
    spelling: int
    odd: tuple[tuple[str, str], ...]

    @property
    def marker(self) -> str:
        return f"condmarker{self.index}z"


def _coding(system: str, code: str, spelling: int) -> dict:
    chosen = SYSTEM_SPELLINGS[system][spelling % len(SYSTEM_SPELLINGS[system])]
    return {"code": code} | ({"system": chosen} if chosen else {})


def _labels(spec) -> list[dict]:  # type: ignore[no-untyped-def]
    labels = []
    if spec.confidentiality:
        labels.append(_coding(CONF, spec.confidentiality, spec.spelling))
    labels += [_coding(ACT, code, spec.spelling) for code in sorted(spec.sensitivity)]
    if spec.law:
        labels.append(_coding(ACT, "42CFRPart2", spec.spelling))
    return labels + [{"system": system, "code": code} for system, code in spec.odd]


def resources(docs: list[DocSpec], conditions: list[LabelSpec] = (),  # type: ignore[assignment]
              patient: LabelSpec | None = None) -> list[dict]:
    pat: dict = {"resourceType": "Patient", "id": PATIENT, "gender": "female",
                 "birthDate": "1960-01-01"}
    if patient is not None and _labels(patient):
        pat["meta"] = {"security": _labels(patient)}
    out: list[dict] = [pat]
    for c in conditions:
        cond = {"resourceType": "Condition", "id": f"cond-{c.index}",
                "subject": {"reference": f"Patient/{PATIENT}"},
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"text": f"Disorder {c.marker}"}}
        if _labels(c):
            cond["meta"] = {"security": _labels(c)}
        out.append(cond)
    for d in docs:
        labels = _labels(d)
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


RANDOM_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
SENSITIVE_OR_LAW = {"ETH", "SUD", "PSY", "MH", "BH", "HIV", "STD", "SDV", "SEX", "42CFRPart2"}
ALIASED = {"ETHUD", "OPIOIDUD", "PSYTHPN"}


def _meaningful(label: tuple[str, str]) -> bool:
    """A random draw that happens to spell a label the policy understands (left out)."""
    system, code = label
    return (system == CONF and code in {"U", "L", "M", "N", "R", "V"}) or (
        system == ACT and code in SENSITIVE_OR_LAW | ALIASED)


ODD = st.lists(st.sampled_from(ODD_LABELS) | st.tuples(RANDOM_TEXT, RANDOM_TEXT)
               | st.tuples(st.sampled_from([CONF, ACT]), RANDOM_TEXT), max_size=2).map(
    lambda xs: tuple(x for x in xs if not _meaningful(x)))


def _random_codes(draw: st.DrawFn) -> dict:
    return dict(
        confidentiality=draw(st.sampled_from([None, "N", "M", "R", "V"])),
        sensitivity=frozenset(draw(st.sets(st.sampled_from(["PSY", "SUD", "HIV", "ETH", "MH"]),
                                           max_size=2))),
        law=draw(st.booleans()), spelling=draw(st.integers(0, 15)), odd=draw(ODD))


@st.composite
def label_specs(draw: st.DrawFn, index: int) -> LabelSpec:
    return LabelSpec(index=index, **_random_codes(draw))


@st.composite
def doc_specs(draw: st.DrawFn, index: int) -> DocSpec:
    return DocSpec(
        index=index, type_code=draw(st.sampled_from(TYPES)),
        category=draw(st.sampled_from(CATEGORIES)), **_random_codes(draw),
        in_meta=draw(st.booleans()), binary=draw(st.booleans()),
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


@st.composite
def contexts(draw: st.DrawFn) -> tuple[list[LabelSpec], LabelSpec]:
    """Labelled Conditions and a labelled Patient for a chart."""
    conditions = [draw(label_specs(i)) for i in range(draw(st.integers(0, 4)))]
    return conditions, draw(label_specs(99))


def condition_visible(cond: LabelSpec, role: str, scope: str) -> bool:
    """The oracle for Conditions and the Patient: a granted type, then the labels."""
    return scope in ("all", "no-docs") and labels_pass(cond, role)


def patient_visible(patient: LabelSpec, role: str) -> bool:
    return labels_pass(patient, role)  # every scope set here grants Patient read


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
    for tool in ("list_conditions", "read_patient_demographics"):  # what a prompt gets
        texts.append(run_tool(tool, {}, tools, Pseudonymiser(enabled=False)))
    texts.append(repr(tools.conditions()))
    draft = run_task(chart, get_task("summary"), get_backend("offline"))
    for s in draft.sentences:
        texts.append(s.text)
        ids.update(c.document for c in s.citations)
    ids.update(doc for doc, _ in draft.cited_documents())
    return ids, "\n".join(texts)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(charts(), contexts())
def test_denied_resources_never_leave_the_policy(case: tuple, context: tuple) -> None:
    docs, role, scope, task_types = case
    conditions, patient = context
    client = RecordingClient(resources(docs, conditions, patient))
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
    # Conditions and the Patient: the same labels, the same rule
    shown = {c.marker for c in conditions if condition_visible(c, role, scope)}
    assert {c["id"] for c in chart.conditions} == {f"cond-{c.index}" for c in conditions
                                                   if c.marker in shown}
    for c in conditions:
        assert (c.marker in text) == (c.marker in shown), c
    assert (chart.patient is not None) == patient_visible(patient, role)
    if not patient_visible(patient, role):
        assert "1960" not in text and "age_years\": 6" not in text and "female" not in text


@settings(max_examples=30, deadline=None)
@given(charts(), st.sampled_from(ROLES), contexts())
def test_query_time_filter_catches_a_policy_change_after_indexing(case: tuple, later_role: str,
                                                                  context: tuple) -> None:
    """Defence in depth: if the context narrows after indexing, search obeys the new decision."""
    docs, role, scope, task_types = case
    conditions, _ = context
    chart = load_chart(BundleClient(resources(docs, conditions)), PATIENT,
                       grants=Grants.parse(SCOPES[scope]),
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
    for c in conditions:  # the Conditions' decision is repeated by the agent's tools too
        if not condition_visible(c, later_role, scope):
            assert c.marker not in text
