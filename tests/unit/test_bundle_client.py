"""BundleClient resolves urn:uuid references inside a transaction, as a server would."""

from __future__ import annotations

import json

from app.retrieval.bundles import BundleClient


def test_urn_uuid_references_resolve_to_type_and_id(tmp_path):
    pid, did = "5f1c0e7a-0000-4000-8000-000000000001", "5f1c0e7a-0000-4000-8000-000000000002"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{pid}", "resource": {"resourceType": "Patient", "id": pid},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{did}", "resource": {
            "resourceType": "DocumentReference", "id": did, "subject": {"reference": f"urn:uuid:{pid}"},
            "context": {"encounter": [{"reference": "urn:uuid:not-in-this-bundle"}]}},
         "request": {"method": "POST", "url": "DocumentReference"}},
    ]}
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    client = BundleClient.from_dir(tmp_path)
    docs = list(client.search("DocumentReference", {"patient": pid}))
    assert [d["id"] for d in docs] == [did]
    assert docs[0]["subject"]["reference"] == f"Patient/{pid}"
    assert docs[0]["context"]["encounter"][0]["reference"] == "urn:uuid:not-in-this-bundle"
    assert list(client.search("DocumentReference", {"patient": "someone-else"})) == []
