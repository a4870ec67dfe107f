from app.smart.scopes import Grants


def test_v1_and_v2_spellings_are_equivalent():
    v1 = Grants.parse("patient/DocumentReference.read user/Provenance.write")
    v2 = Grants.parse("patient/DocumentReference.rs user/Provenance.cud")
    for g in (v1, v2):
        assert g.may_read("DocumentReference")
        assert g.allows("DocumentReference", "search")
        assert g.may_create("Provenance")
        assert not g.may_create("DocumentReference")


def test_wildcards():
    g = Grants.parse("user/*.cruds")
    assert g.may_create("DocumentReference") and g.may_read("Binary")
    assert Grants.parse("patient/*.read").may_read("Condition")
    assert not Grants.parse("patient/*.read").may_create("Condition")


def test_narrowed_grants_disable_writeback_with_reason():
    g = Grants.parse("launch openid patient/DocumentReference.rs user/Provenance.c")
    assert not g.writeback_enabled
    reason = g.writeback_reason()
    assert reason and "DocumentReference" in reason and "Provenance" not in reason.split("create")[1]


def test_query_restricted_scope_grants_nothing_unrestricted():
    g = Grants.parse("patient/DocumentReference.rs?category=clinical-note")
    assert not g.may_read("DocumentReference")


def test_garbage_is_ignored():
    g = Grants.parse("  nonsense patient/.r user/Foo.x  ")
    assert g.resources == ()


def test_request_spelling_follows_server_capability():
    from app.smart.scopes import spell_for_server

    wanted = "launch openid fhirUser patient/DocumentReference.rs user/Provenance.c patient/Patient.r"
    v1 = spell_for_server(wanted, v2=False)
    assert v1.split() == ["launch", "openid", "fhirUser", "patient/DocumentReference.read",
                          "user/Provenance.write", "patient/Patient.read"]
    assert spell_for_server(wanted, v2=True) == wanted
    # what the v1 spelling asks for covers what the app wanted
    assert Grants.parse(v1).may_create("Provenance") and Grants.parse(v1).may_read("DocumentReference")


def test_restricted_v2_scope_has_no_v1_form():
    from app.smart.scopes import spell_for_server

    assert spell_for_server("patient/Observation.rs?category=laboratory", v2=False) == ""
    assert spell_for_server("user/Device.crs", v2=False) == "user/Device.read user/Device.write"
