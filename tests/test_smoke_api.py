"""A first pass over the main routes; the detailed specifications live in the other test modules."""

from tests.conftest import export_payload


def test_create_list_retrieve_under_each_prefix(api, prefix, engine):
    created = api.post(prefix, export_payload(), format="json")
    assert created.status_code == 201, created.json()
    export_id = created.json()["id"]
    listed = api.get(prefix)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["results"]] == [export_id]
    detail = api.get(f"{prefix}{export_id}/")
    assert detail.status_code == 200
    assert detail.json()["destination"]["config"]["bucket_name"] == "analytics"
    assert "aws_secret_access_key" not in detail.json()["destination"]["config"]
    assert [c.name for c in engine.calls] == ["sync_batch_export"]
