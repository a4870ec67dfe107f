"""Settings of the app: one frozen object from the environment (prefix ``APP_``).

Every setting is documented in docs/configuration.md (a test fails when one is
not). Invalid combinations fail at start-up with a message that says what to set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigError

DEFAULT_SCOPES = (
    "launch openid fhirUser online_access patient/Patient.r patient/Condition.rs "
    "user/Practitioner.r user/PractitionerRole.rs "
    "patient/DocumentReference.rs patient/Binary.r user/DocumentReference.c "
    "user/DocumentReference.u user/Provenance.c user/Provenance.rs user/Device.c user/Device.rs "
    "user/AuditEvent.c"
)
DEFAULT_BACKEND_SCOPES = (
    "system/Patient.rs system/Condition.rs system/DocumentReference.rs system/Binary.r "
    "system/Practitioner.r system/DocumentReference.cu system/Provenance.c system/Device.cru"
)
_TEST_SECRET = "insecure-test-secret-key-do-not-use"  # noqa: S105 (marked as test-only)


class Settings(BaseSettings):
    """All configuration. Frozen: build a new one rather than mutate."""

    model_config = SettingsConfigDict(env_prefix="APP_", frozen=True, extra="ignore")

    fhir_base_url: str | None = Field(
        default=None, description="FHIR base for the CLI and open-server mode (no SMART)."
    )
    allowed_iss: str = Field(default="", description="Comma list of FHIR bases allowed to launch.")
    client_id: str = "smart-draft-agent"
    client_secret: SecretStr | None = None
    private_key_path: Path | None = None
    redirect_uri: str = "http://127.0.0.1:8000/callback"
    scopes: str = DEFAULT_SCOPES
    backend_client_id: str | None = Field(
        default=None, description="Client id for SMART Backend Services (CLI, batch); default APP_CLIENT_ID.")
    backend_scopes: str = DEFAULT_BACKEND_SCOPES
    open_server: bool = Field(
        default=False, description="Allow 'connect without auth' to APP_FHIR_BASE_URL (development only).")
    llm_backend: Literal["offline", "anthropic", "openai"] = "offline"
    anthropic_model: str = "claude-sonnet-5-5"
    anthropic_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint base, e.g. http://127.0.0.1:8001/v1 (vLLM).")
    openai_model: str | None = None
    openai_api_key: SecretStr | None = None
    llm_timeout_s: float = 60.0
    llm_max_retries: int = Field(default=3, ge=0, le=10)
    llm_max_output_tokens: int = Field(default=4096, ge=256, le=64000)
    llm_pseudonymise: bool | None = Field(
        default=None, description="Pseudonymise names, identifiers and dates; default on for anthropic.")
    llm_price_in_per_mtok: float | None = None
    llm_price_out_per_mtok: float | None = None
    llm_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per-model prices (JSON), over the bundled table.")
    llm_fallback: str = Field(
        default="", description="Comma list: the backends tried in order, e.g. anthropic,openai,offline.")
    llm_hybrid: bool = Field(default=False, description="Offline engine first; the model reads only its candidates.")
    anthropic_batch_allowed: bool = Field(
        default=False, description="Allow Message Batches for `batch --backend anthropic` (not zero data retention).")
    llm_breaker_failures: int = Field(default=5, ge=1, le=1000)
    llm_breaker_window_s: float = Field(default=300.0, gt=0)
    llm_breaker_cooldown_s: float = Field(default=60.0, gt=0)
    embedding_model: str | None = Field(
        default=None, description="Path or name of a sentence-transformers model; default bundled."
    )
    data_dir: Path = Path("var")
    database_url: str | None = None
    secret_key: SecretStr = SecretStr("")
    server_profile: Literal["auto", "generic", "hapi", "epic", "oracle", "sekmet"] = "auto"
    role_policy: Path | None = None
    testing: bool = False
    session_lifetime_s: int = 3600
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token a scraper sends to GET /metrics (else an admin session).")
    fhir_timeout_s: float = 20.0
    max_attachment_bytes: int = 2_000_000
    max_documents: int = 2000
    embedding_cache: bool = Field(
        default=True,
        description="Keep an encrypted embedding cache under APP_DATA_DIR (re-launches embed only new text).")
    model_cache_dir: Path | None = Field(
        default=None,
        description="Where the ONNX export of the embedding model is kept; default APP_DATA_DIR/models.")
    eval_gate_f1: float = Field(default=0.75, ge=0, le=1, description="`eval` gate: patient F1 at least this.")
    eval_gate_precision: float = Field(default=0.80, ge=0, le=1, description="`eval` gate: patient precision.")
    eval_gate_recall: float | None = Field(default=None, ge=0, le=1, description="Optional `eval` recall gate.")
    eval_gate_grade: float | None = Field(default=None, ge=0, le=1, description="Optional grade-agreement gate.")
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; off when unset.")
    override_edit_threshold: float = Field(
        default=0.2, ge=0, le=1, description="An edit counts as an override above this normalised edit distance.")
    shadow_backend: str | None = Field(default=None, description="Backend that also runs a share of runs, unwritten.")
    shadow_rate: float = Field(default=0.0, ge=0, le=1, description="Share of runs also run on APP_SHADOW_BACKEND.")
    model_release_gate: Literal["refuse", "warn", "off"] = Field(
        default="warn", description="A model id without a recorded passing gold run: refuse, warn or off.")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.secret_key.get_secret_value() and not self.testing:
            raise ConfigError(
                "APP_SECRET_KEY is not set: set it to a long random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)."
            )
        if self.secret_key.get_secret_value() == _TEST_SECRET and not self.testing:
            raise ConfigError("APP_SECRET_KEY is the test key: set a real secret outside tests.")
        if self.llm_backend != "offline":
            from app.agent.backends import available_backends

            if self.llm_backend not in available_backends():
                raise ConfigError(
                    f"APP_LLM_BACKEND={self.llm_backend} is not built yet; use 'offline'."
                )
        if self.llm_backend == "openai" and not (self.openai_base_url and self.openai_model):
            raise ConfigError("APP_LLM_BACKEND=openai needs APP_OPENAI_BASE_URL and APP_OPENAI_MODEL.")
        if self.llm_backend == "anthropic" and self.anthropic_api_key is None \
                and not os.environ.get("ANTHROPIC_API_KEY"):
            raise ConfigError("APP_LLM_BACKEND=anthropic needs APP_ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY).")
        if self.llm_backend != "offline" or self.llm_fallback or self.llm_hybrid:
            from app.agent.backends import check_chain

            check_chain(self)  # APP_LLM_FALLBACK, APP_LLM_HYBRID, prices: ConfigError naming what to set
        return self

    @property
    def allowed_iss_list(self) -> tuple[str, ...]:
        return tuple(i.strip().rstrip("/") for i in self.allowed_iss.split(",") if i.strip())

    @property
    def allowed_iss_origins(self) -> tuple[str, ...]:
        """Origins (scheme://host:port) of the allowed EHRs, for frame-ancestors."""
        from urllib.parse import urlparse

        out = []
        for iss in self.allowed_iss_list:
            u = urlparse(iss)
            if u.scheme and u.netloc:
                out.append(f"{u.scheme}://{u.netloc}")
        return tuple(dict.fromkeys(out))

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'app.db'}"

    def secret(self) -> bytes:
        value = self.secret_key.get_secret_value() or _TEST_SECRET
        return value.encode()


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment plus explicit overrides; ConfigError if invalid."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:  # name the fields, never the values
        names = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()))
            names.append(f"APP_{loc.upper()}" if loc else err.get("msg", "?"))
        raise ConfigError(f"Invalid configuration: {', '.join(names) or exc}") from None
