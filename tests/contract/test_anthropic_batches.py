"""Anthropic Message Batches against a fake API on the recorded wire format (httpx2.MockTransport,
the SDK's own HTTP library): create, retrieve (in_progress → ended), JSONL results in any order
with succeeded / errored / expired entries, delete. No network."""

from __future__ import annotations

import json
import re

import anthropic
import httpx2
import pytest

from app.agent.backends.anthropic_batch import (
    BATCH_DISCOUNT,
    MessageBatches,
    batch_request,
    custom_id_for,
    project_cost,
    pseudonymiser_for,
    split,
    to_backend_result,
)
from app.agent.backends.llm import load_prices
from app.agent.runtime import run_task
from app.agent.tasks import get_task
from app.batch.anthropic import check_allowed
from app.batch.screen import build_chart
from app.config import load_settings
from app.errors import ConfigError
from app.retrieval.policy import RolePolicy
from tests.unit.test_batch_pipeline import item_for

SECRET = b"contract-batch-secret-0123456789ab"
MODEL = "claude-sonnet-5-5"
PIDS = ("pat-onc-01", "pat-onc-02", "pat-onc-03")


def batch_object(bid: str, status: str) -> dict:
    return {"id": bid, "type": "message_batch", "processing_status": status,
            "request_counts": {"processing": 0 if status == "ended" else 3, "succeeded": 0, "errored": 0,
                               "canceled": 0, "expired": 0},
            "ended_at": "2026-12-01T12:00:00Z" if status == "ended" else None,
            "created_at": "2026-12-01T11:00:00Z", "expires_at": "2026-12-02T11:00:00Z",
            "archived_at": None, "cancel_initiated_at": None,
            "results_url": (f"https://api.anthropic.test/v1/messages/batches/{bid}/results"
                            if status == "ended" else None)}


def message(tool_input: dict, usage=(900, 300, 0, 0)) -> dict:
    return {"id": "msg_01batch", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "tool_use", "id": "toolu_01", "name": "submit_draft", "input": tool_input}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                      "cache_creation_input_tokens": usage[2], "cache_read_input_tokens": usage[3]}}


class FakeBatches:
    """Scripted API: ``outcomes[round][custom_id]`` is 'succeeded' | 'errored' | 'expired'."""

    def __init__(self, outcomes: list[dict[str, str]], answers: dict[str, dict]) -> None:
        self.outcomes, self.answers = outcomes, answers
        self.created: list[list[dict]] = []
        self.polls: dict[str, int] = {}
        self.deleted: list[str] = []

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.host == "api.anthropic.test"
        path = request.url.path
        if request.method == "POST" and path == "/v1/messages/batches":
            body = json.loads(request.content)
            self.created.append(body["requests"])
            return httpx2.Response(200, json=batch_object(f"msgbatch_0{len(self.created)}", "in_progress"))
        m = re.fullmatch(r"/v1/messages/batches/(msgbatch_0\d)(/results)?", path)
        assert m, path
        bid = m.group(1)
        if request.method == "DELETE":
            self.deleted.append(bid)
            return httpx2.Response(200, json={"id": bid, "type": "message_batch_deleted"})
        if m.group(2):
            round_ = int(bid[-1]) - 1
            lines = []
            for req in reversed(self.created[round_]):  # any order
                cid = req["custom_id"]
                kind = self.outcomes[round_][cid]
                if kind == "succeeded":
                    result = {"type": "succeeded", "message": message(self.answers[cid])}
                elif kind == "errored":
                    result = {"type": "errored", "error": {"type": "error", "error": {
                        "type": "overloaded_error", "message": "Overloaded"}}}
                else:
                    result = {"type": kind}
                lines.append(json.dumps({"custom_id": cid, "result": result}))
            return httpx2.Response(200, content="\n".join(lines).encode(),
                                   headers={"content-type": "application/binary"})
        self.polls[bid] = self.polls.get(bid, 0) + 1
        return httpx2.Response(200, json=batch_object(bid, "ended" if self.polls[bid] >= 2 else "in_progress"))


def charts():
    policy = RolePolicy.default()
    return {pid: build_chart(item_for(pid), policy) for pid in PIDS}


def answer_from_offline(chart, pseudo) -> dict:
    """What a faithful model would submit: the offline screen's sentences, as the model saw them."""
    from app.agent.backends import get_backend
    from app.agent.guard import Limits
    from app.agent.runtime import ChartTools

    res = get_backend("offline").run(get_task("irae"), ChartTools(chart, Limits()), question=None, limits=Limits())
    sentences = [{"text": pseudo.apply(s.text), "evidence": [{"chunk_id": c, "quote": pseudo.apply(q)}
                                                             for c, q in s.evidence][:5]}
                 for s in res.sentences if s.evidence and all(len(q) >= 8 for _c, q in s.evidence)]
    events = [{k: v for k, v in ev.items() if k in ("organ", "term", "ctcae_grade", "attribution", "status")}
              | {"sentence_indexes": []} for ev in (res.findings or {}).get("events", [])]
    return {"sentences": sentences[:20], "answer_found": True,
            "irae": {"irae_detected": bool(events), "events": events}}


def test_requests_are_opaque_cached_and_carry_only_candidate_passages():
    cs = charts()
    reqs = {pid: batch_request(c, custom_id=custom_id_for(SECRET, "b1", f"key-{pid}"), model=MODEL, secret=SECRET)
            for pid, c in cs.items()}
    for pid, req in reqs.items():
        cid = req["custom_id"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cid) and pid not in cid and "onc" not in cid
        params = req["params"]
        assert params["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert params["tool_choice"] == {"type": "tool", "name": "submit_draft"}
        assert [t["name"] for t in params["tools"]] == ["submit_draft"]
        content = params["messages"][0]["content"]
        sent = len(re.findall(r"<note_data ", content))
        assert 0 < sent < len(cs[pid].index)  # hybrid: candidates only, not the whole chart
        for name in cs[pid].patient.get("name") or []:
            assert name["family"] not in content  # pseudonymised
    # the shared prefix (tools + system) is byte-identical across patients: one cache entry
    prefixes = {json.dumps([r["params"]["tools"], r["params"]["system"]]) for r in reqs.values()}
    assert len(prefixes) == 1
    assert custom_id_for(SECRET, "b1", "k") != custom_id_for(SECRET, "b2", "k")


def test_results_in_any_order_matched_by_custom_id_errored_retried_once_then_listed():
    cs = charts()
    cids = {pid: custom_id_for(SECRET, "b1", f"key-{pid}") for pid in PIDS}
    reqs = [batch_request(cs[pid], custom_id=cids[pid], model=MODEL, secret=SECRET) for pid in PIDS]
    answers = {cids[pid]: answer_from_offline(cs[pid], pseudonymiser_for(SECRET, cids[pid], cs[pid].patient))
               for pid in PIDS}
    a, b, c = (cids[p] for p in PIDS)
    fake = FakeBatches([{a: "succeeded", b: "errored", c: "expired"}, {b: "succeeded", c: "expired"}], answers)
    client = anthropic.Anthropic(api_key="test-key", base_url="https://api.anthropic.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    sleeps: list[float] = []
    outcome = MessageBatches(client, sleep=sleeps.append, poll_s=30).run(reqs)
    assert set(outcome.messages) == {a, b} and outcome.failed == {c: "expired"}
    assert sorted(r["custom_id"] for r in fake.created[1]) == sorted([b, c])  # only the errored and expired, once
    assert len(fake.created) == 2 and fake.deleted == ["msgbatch_01", "msgbatch_02"]
    assert sleeps == [30, 30]
    # a succeeded message becomes a verified draft: quotes restored from the pseudonymised text
    price = load_prices()[MODEL]
    task = get_task("irae")
    for pid in ("pat-onc-01",):
        cid = cids[pid]
        result = to_backend_result(outcome.messages[cid], task=task, price=price, model=MODEL,
                                   pseudo=pseudonymiser_for(SECRET, cid, cs[pid].patient))

        from app.batch.screen import Replay

        draft = run_task(cs[pid], task, Replay(result, "anthropic-batch", MODEL))
        assert draft.status == "completed" and draft.sentences and draft.unsupported == 0
        assert draft.findings["irae_detected"] is True
        list_cost = (900 * price.input + 300 * price.output) / 1e6
        assert draft.cost_usd == pytest.approx(list_cost * BATCH_DISCOUNT)


def test_a_message_without_submit_draft_is_escalated_not_guessed():
    cs = charts()
    cid = custom_id_for(SECRET, "b1", "k")
    msg = message({})
    msg["content"] = [{"type": "text", "text": "I cannot help with that."}]
    result = to_backend_result(msg, task=get_task("irae"), price=load_prices()[MODEL], model=MODEL,
                               pseudo=pseudonymiser_for(SECRET, cid, cs["pat-onc-01"].patient))
    assert result.status == "escalated" and not result.sentences


def test_split_respects_count_and_size_limits():
    reqs = [{"custom_id": f"r{i}", "params": {"x": "y" * 100}} for i in range(10)]
    assert [len(g) for g in split(reqs, max_requests=4)] == [4, 4, 2]
    assert all(len(json.dumps(g)) <= 600 for g in split(reqs, max_bytes=600))


def test_projected_cost_per_100_notes_is_under_a_quarter():
    cs = charts()
    reqs = [batch_request(c, custom_id=custom_id_for(SECRET, "b", pid), model=MODEL, secret=SECRET)
            for pid, c in cs.items()]
    cost = project_cost(reqs, load_prices()[MODEL])
    notes = sum(len(c.documents) for c in cs.values())
    assert cost["batch_cost_usd"] < cost["list_price_without_batch_or_cache_usd"] * 0.51
    assert cost["batch_cost_usd"] / notes * 100 < 0.25


def test_batches_are_off_unless_explicitly_allowed():
    with pytest.raises(ConfigError) as err:
        check_allowed(load_settings(testing=True))
    assert err.value.code == "anthropic_batch_not_allowed" and "zero data retention" in str(err.value)
    check_allowed(load_settings(testing=True, anthropic_batch_allowed=True))


def test_the_batch_pipeline_screens_through_message_batches(tmp_path):
    """BatchRun with --backend anthropic: requests out, answers verified per chart, checkpoints in;
    an expired request is not checkpointed (the next run asks again)."""
    from app.batch.pipeline import BatchOptions, BatchRun, Connection
    from app.services import Services
    from app.smart.scopes import Grants
    from app.store.models import Vault

    settings = load_settings(testing=True, data_dir=tmp_path / "d", secret_key=SECRET.decode(),
                             anthropic_batch_allowed=True)
    services = Services(settings)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(PIDS))
    run = BatchRun(BatchOptions(fhir_base="https://ehr.example/fhir", cohort=str(ids), backend="anthropic",
                                write=False, progress=False), services,
                   Connection(client=None, grants=Grants.parse(""), mode="test", jti=None))  # type: ignore[arg-type]
    vault = Vault(settings.secret())
    work = tmp_path / "work.ndjson"
    items = [item_for(pid) | {"key": run.patient_key(pid)} for pid in PIDS]
    work.write_text("".join(vault.seal(json.dumps(i)) + "\n" for i in items))
    cs = {i["key"]: build_chart(i, RolePolicy.default()) for i in items}
    cids = {k: custom_id_for(settings.secret(), run.batch_id, k) for k in cs}
    answers = {cids[k]: answer_from_offline(c, pseudonymiser_for(settings.secret(), cids[k], c.patient))
               for k, c in cs.items()}
    keys = [i["key"] for i in items]
    fake = FakeBatches([{cids[keys[0]]: "succeeded", cids[keys[1]]: "succeeded", cids[keys[2]]: "expired"},
                        {cids[keys[2]]: "expired"}], answers)
    client = anthropic.Anthropic(api_key="test-key", base_url="https://api.anthropic.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    run.sleep = lambda s: None
    run._message_batches(work, lambda: None, client=client)
    rows = {r["patient_key"]: r for r in run.checkpoints.rows(run.batch_id)}
    assert set(rows) == set(keys[:2])
    assert rows[keys[0]]["status"] == "completed" and rows[keys[0]]["irae_detected"] is True
    assert rows[keys[0]]["cost_usd"] > 0
    assert run.stats.counts["model_failed:expired"] == 1
    sent = json.dumps(fake.created)
    assert not any(pid in sent for pid in PIDS)  # no patient id reaches the vendor
