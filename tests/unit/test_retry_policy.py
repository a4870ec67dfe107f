"""The one retry policy (app/retry.py): what is retried, how long it waits, and where it is used."""

from __future__ import annotations

import pytest
import requests
import responses

from app.retry import ANTHROPIC_RETRYABLE, RETRYABLE, policy, retry_safe


class R:
    def __init__(self, status: int, headers: dict | None = None) -> None:
        self.status_code, self.headers = status, headers or {}


def _run(p, answers, *, safe=True):  # type: ignore[no-untyped-def]
    seq = list(answers)
    return p.run(lambda: seq.pop(0), status_of=lambda r: r.status_code, headers_of=lambda r: r.headers, safe=safe)


def test_what_is_safe_to_retry():
    assert all(retry_safe(m) for m in ("GET", "HEAD", "PUT", "DELETE", "get"))
    assert not retry_safe("POST") and not retry_safe("PATCH")
    assert retry_safe("POST", {"If-None-Exist": "identifier=s|1"})
    conditional = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "DocumentReference", "ifNoneExist": "identifier=s|1"}},
        {"request": {"method": "PUT", "url": "Patient/1"}}]}
    assert retry_safe("POST", None, conditional)
    conditional["entry"].append({"request": {"method": "POST", "url": "Provenance"}})
    assert not retry_safe("POST", None, conditional)  # one unconditional create: sent once


def test_retryable_statuses_are_one_set_plus_529_for_anthropic():
    assert RETRYABLE == {408, 429, 500, 502, 503, 504} and ANTHROPIC_RETRYABLE == RETRYABLE | {529}
    slept: list[float] = []
    assert _run(policy(sleep=slept.append), [R(529), R(200)]).status_code == 529  # not for others
    assert _run(policy(anthropic=True, sleep=slept.append), [R(529), R(200)]).status_code == 200


def test_retry_after_is_honoured_and_capped_and_backoff_has_jitter():
    slept: list[float] = []
    p = policy(sleep=slept.append)
    assert _run(p, [R(503, {"Retry-After": "3"}), R(200)]).status_code == 200 and slept == [3.0]
    slept.clear()
    _run(p, [R(429, {"Retry-After": "86400"}), R(200)])
    assert slept == [60.0]  # capped
    waits = set()
    for _ in range(5):
        slept.clear()
        _run(p, [R(503), R(503), R(503), R(200)])
        assert len(slept) == 3 and all(0 < s <= 30 for s in slept) and slept[2] >= 1.0
        waits.add(tuple(slept))
    assert len(waits) > 1  # jitter


def test_unsafe_calls_and_exhausted_attempts_return_the_last_answer():
    slept: list[float] = []
    assert _run(policy(sleep=slept.append), [R(504), R(201)], safe=False).status_code == 504 and slept == []
    assert _run(policy(attempts=2, sleep=slept.append), [R(503), R(503), R(200)]).status_code == 503


@responses.activate
@pytest.mark.parametrize(("grant", "calls"), [("authorization_code", 1), ("client_credentials", 2)])
def test_the_token_endpoint_repeats_only_a_client_credentials_request(monkeypatch, grant, calls):
    from app.errors import TemporaryUpstreamError
    from app.smart.tokens import _post

    monkeypatch.setattr("app.retry.time.sleep", lambda s: None)
    responses.post("https://ehr.test/token", status=503)
    responses.post("https://ehr.test/token", json={"access_token": "a", "token_type": "Bearer", "scope": "x"})
    try:
        _post(requests.Session(), "https://ehr.test/token", {"grant_type": grant}, 5)
    except TemporaryUpstreamError:
        pass
    assert len(responses.calls) == calls
