from pathlib import Path

import pytest

from app.config import Settings, load_settings
from app.errors import ConfigError

DOC = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented():
    for name in Settings.model_fields:
        assert f"`APP_{name.upper()}`" in DOC, f"APP_{name.upper()} is not documented"


def test_secret_key_required_outside_tests(monkeypatch):
    monkeypatch.delenv("APP_TESTING", raising=False)
    with pytest.raises(ConfigError) as exc:
        load_settings(testing=False)
    assert "APP_SECRET_KEY" in str(exc.value)


def test_model_backend_without_its_settings_fails_at_start_up(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError) as exc:
        load_settings(testing=True, llm_backend="anthropic")
    assert "APP_ANTHROPIC_API_KEY" in str(exc.value)
    assert load_settings(testing=True, llm_backend="anthropic", anthropic_api_key="k").llm_backend == "anthropic"
    with pytest.raises(ConfigError) as exc:
        load_settings(testing=True, llm_backend="openai")
    assert "APP_OPENAI_BASE_URL" in str(exc.value)


def test_invalid_value_names_the_variable_not_the_value():
    with pytest.raises(ConfigError) as exc:
        load_settings(testing=True, server_profile="nonsense-secret-value")
    assert "APP_SERVER_PROFILE" in str(exc.value) and "nonsense-secret-value" not in str(exc.value)


def test_allowed_iss_parsing():
    s = load_settings(testing=True, allowed_iss=" https://a.test/fhir/ ,https://b.test:8443/r4")
    assert s.allowed_iss_list == ("https://a.test/fhir", "https://b.test:8443/r4")
    assert s.allowed_iss_origins == ("https://a.test", "https://b.test:8443")
