"""One trace per run: the run, its model call, each tool call, the citation check and the write, with
the trace id on the run's ledger row; the canary's name in no span name or attribute."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import create_app
from app.monitoring import tracing
from app.monitoring.evaluation import DEFAULT_DATA, charts_for
from app.retrieval.embeddings import HashingEmbedder
from app.services import Actor
from app.smart.scopes import Grants

CANARY = ("Zyxwend", "Canarywhistle", "pat-canary")


def test_a_draft_run_is_one_trace_with_its_children(tmp_path):
    exporter = InMemorySpanExporter()
    assert tracing.configure(None, exporter=exporter)
    app = create_app({"testing": True, "data_dir": tmp_path})
    services = app.extensions["smart_draft"]
    chart = charts_for(DEFAULT_DATA, ["pat-canary"], HashingEmbedder())["pat-canary"]
    svc = services.drafting()
    for task in ("irae", "summary"):
        exporter.clear()
        draft = svc.draft(chart, task, backend_name="offline")
        actor = Actor(user_reference="Practitioner/p1", client_id="c", token_jti=None,
                      grants=Grants.parse("patient/*.rs"))  # read-only: the write is refused, still traced
        result = svc.write(None, chart, draft, actor)  # type: ignore[arg-type]
        assert result["state"] in ("disabled", "not_written")
        spans = exporter.get_finished_spans()
        assert len({s.context.trace_id for s in spans}) == 1  # one trace for the run and its write
        names = [s.name for s in spans]
        root = next(s for s in spans if s.name == "agent.run")
        assert root.parent is None and names.count("agent.run") == 1
        assert {"model.call", "citations.verify", "writeback.write"} <= set(names)
        assert any(n.startswith("tool.") for n in names)
        tool = next(s for s in spans if s.name.startswith("tool."))
        model = next(s for s in spans if s.name == "model.call")
        assert tool.parent.span_id == model.context.span_id and model.parent.span_id == root.context.span_id
        assert root.attributes["sda.task"] == task and root.attributes["sda.status"] == draft.status
        row = next(r for r in services.drafts.runs() if r["run_id"] == draft.run_id)
        assert row["trace_id"] == format(root.context.trace_id, "032x")
        for s in spans:
            blob = s.name + repr(dict(s.attributes or {})) + repr([dict(e.attributes or {}) for e in s.events])
            assert not any(c in blob for c in CANARY), s.name
