"""``python -m app draft``: one task, headless, against an open FHIR server (no SMART).

Open-server mode is for development against sandboxes such as the public
HAPI server: no token is sent and the output says ``unauthenticated``.
SMART Backend Services for the CLI is not built yet.
"""

from __future__ import annotations

from app.config import load_settings
from app.fhir.client import FhirClient
from app.retrieval.indexer import load_chart
from app.services import Actor, Services
from app.smart.scopes import Grants

OPEN_SERVER_GRANTS = ("patient/Patient.r patient/Condition.rs patient/DocumentReference.rs "
                      "patient/Binary.r user/DocumentReference.c user/Provenance.c user/Device.c")


def run_draft(*, fhir_base: str, patient: str, task: str, question: str | None,
              backend: str | None, role: str, write: bool) -> dict:
    services = Services(load_settings())
    client = FhirClient(fhir_base)
    grants = Grants.parse(OPEN_SERVER_GRANTS)
    chart = load_chart(client, patient, grants=grants, role=role, policy=services.policy,
                       embedder=services.embedder)
    drafting = services.drafting()
    draft = drafting.draft(chart, task, question=question, backend_name=backend)
    written = None
    if write:
        result = drafting.write(client, chart, draft, Actor(user_reference=None,
                                client_id=services.settings.client_id, token_jti=None, grants=grants))
        written = result["written"]
    out = draft.contract(written)
    out["mode"] = "unauthenticated"
    out["counts"] = chart.counts
    return out

