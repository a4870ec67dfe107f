"""View models of the clinician's pages (app/web/views.py): no raw ids, spans cut right, filters."""

from __future__ import annotations

from types import SimpleNamespace

from app.agent.citations import Citation, Sentence
from app.retrieval.policy import DocumentMeta
from app.web import views


def meta(doc: str, date: str | None, code: str | None = "11506-3") -> DocumentMeta:
    return DocumentMeta(id=doc, version="1", type_code=code, category_codes=frozenset(), security=frozenset(),
                        date=date)


def cite(doc: str, start: int, end: int) -> Citation:
    return Citation(document=doc, version="1", start=start, end=end, quote="", chunk_id="x")


def test_segments_overlap_and_shared_starts_each_get_an_anchor():
    text = "0123456789"
    segs = views._segments(text, [(2, 6, 1), (4, 8, 2), (2, 4, 3)])
    assert "".join(s.text for s in segs) == text
    anchors = [a for s in segs for a in s.anchors]
    assert sorted(anchors) == [1, 2, 3]  # two citations starting at 2: both addressable
    covered = {s.text: s.cites for s in segs}
    assert covered["23"] == [1, 3] and covered["45"] == [1, 2] and covered["67"] == [2]
    assert covered["01"] == [] and covered["89"] == []


def test_draft_view_numbers_citations_and_puts_each_cited_note_in_one_panel():
    draft = SimpleNamespace(sentences=[
        Sentence(text="A.", supported=True, citations=(cite("d1", 0, 3), cite("d2", 1, 2))),
        Sentence(text="B.", supported=False, citations=()),
        Sentence(text="C.", supported=True, citations=(cite("d1", 4, 6), cite("gone", 0, 1))),
    ], findings=None)
    chart = SimpleNamespace(texts={"d1": "abcdefgh", "d2": "xyz"},
                            documents={"d1": meta("d1", "2026-01-02T10:00:00Z"), "d2": meta("d2", None)})
    view = views.draft_view(draft, chart)
    assert [p.document for p in view["panels"]] == ["d1", "d2"] and view["citations"] == 4
    c = [x for s in view["sentences"] for x in s["citations"]]
    assert [x["n"] for x in c] == [1, 2, 3, 4] and [x["shown"] for x in c] == [True, True, True, False]
    assert c[0]["panel"] == c[2]["panel"] == 1 and c[1]["panel"] == 2
    assert view["panels"][0].date == "2026-01-02" and view["panels"][0].kind == "Progress note"
    assert not view["sentences"][1]["supported"]


def test_writeback_words_have_no_resource_ids_and_link_the_document():
    result = {"state": "written", "written": {"document_reference": "DocumentReference/abc/_history/2",
                                              "device": "Device/xyz"}}
    wb = views.writeback(result, "https://ehr.example/fhir/")
    assert wb["state"] == "preliminary" and "DocumentReference" not in wb["words"]
    assert wb["url"] == "https://ehr.example/fhir/DocumentReference/abc" and wb["version"] == "2"
    approved = views.writeback(dict(result, review={"action": "approve"}), "https://ehr.example/fhir")
    assert approved["state"] == "approved" and "final" in approved["words"]
    assert views.writeback({"state": "held_until_approval"}, None)["state"] == "held"
    assert views.writeback({"state": "queued"}, None)["url"] is None
    assert views.document_url("https://e/fhir", "Device/1") is None


def test_review_effects_say_what_happens_in_the_ehr():
    assert "entered in error" in views.review_effects({"state": "written"})["reject"]
    held = views.review_effects({"state": "held_until_approval"})
    assert "nothing is written" in held["reject"] and "now" in held["approve"]


def test_notes_list_filters_by_type_and_date_and_counts_use():
    chart = SimpleNamespace(documents={"a": meta("a", "2026-01-05"), "b": meta("b", "2026-03-01", "18748-4"),
                                       "c": meta("c", None)})
    drafts = [SimpleNamespace(sentences=[Sentence(text="x", supported=True, citations=(cite("a", 0, 1),))])]
    every = views.notes_list(chart, drafts, None, None, None)
    assert [r["document"] for r in every["rows"]][:2] == ["b", "a"] and every["total"] == 3
    assert {r["document"]: r["used"] for r in every["rows"]} == {"a": 1, "b": 0, "c": 0}
    assert [r["document"] for r in views.notes_list(chart, drafts, "Imaging report", None, None)["rows"]] == ["b"]
    assert [r["document"] for r in views.notes_list(chart, drafts, None, "2026-02-01", None)["rows"]] == ["b"]
    assert [r["document"] for r in views.notes_list(chart, drafts, None, None, "2026-01-31")["rows"]] == ["a"]
    assert views.denied_counts({"read": 3, "denied:confidentiality_restricted": 2, "denied:x": 0}) == [
        ("confidentiality restricted", 2)]
