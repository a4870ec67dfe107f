"""Errors of the app, each with a stable ``code``.

Hierarchy::

    AppError                      code, public_message, http_status
    ├── ConfigError               invalid settings at start-up
    ├── LaunchError               SMART launch refused (unknown iss, bad state, ...)
    ├── AuthError                 token exchange / id_token / refresh failed
    ├── PermissionDenied          a grant the user lacks (scope, role)
    ├── NotBuiltError             a capability that is not built yet says so
    ├── InvalidResourceError      a resource we built fails validation; not sent
    └── UpstreamError             a server we talk to failed
        ├── FatalUpstreamError    do not retry (4xx other than 408/429)
        │   └── FhirError         FHIR server answered with an error status
        └── TemporaryUpstreamError  retry later (408, 429, 500, 502-504, network)

No message ever embeds a server's response body, a token or note text: the
public message is written by us, and ``FhirError`` keeps only the status and
the OperationOutcome issue codes as attributes.
"""

from __future__ import annotations


class AppError(Exception):
    """Root of the app's errors. ``str()`` is the public message, safe to show and log."""

    code = "app_error"
    http_status = 500

    def __init__(
        self, public_message: str, *, code: str | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.public_message}}


class ConfigError(AppError):
    code = "config_error"


class LaunchError(AppError):
    code = "launch_error"
    http_status = 400


class AuthError(AppError):
    code = "auth_error"
    http_status = 401


class PermissionDenied(AppError):
    code = "permission_denied"
    http_status = 403


class NotBuiltError(AppError):
    code = "not_built"
    http_status = 501


class UpstreamError(AppError):
    code = "upstream_error"
    http_status = 502


class FatalUpstreamError(UpstreamError):
    code = "upstream_fatal"


class TemporaryUpstreamError(UpstreamError):
    code = "upstream_temporary"
    http_status = 503


class FhirError(FatalUpstreamError):
    """A FHIR server answered with an error status. Never holds the body."""

    code = "fhir_error"

    def __init__(
        self,
        public_message: str,
        *,
        status: int,
        issue_codes: tuple[str, ...] = (),
        resource_type: str | None = None,
    ) -> None:
        super().__init__(public_message)
        self.status = status
        self.issue_codes = issue_codes
        self.resource_type = resource_type

    def __str__(self) -> str:
        codes = ",".join(self.issue_codes) or "-"
        return f"{self.public_message} (HTTP {self.status}; issues: {codes})"


class InvalidResourceError(AppError):
    """A resource the app built failed FHIR validation before it was sent (a bug on our side).

    Carries the failing element paths only, never their values.
    """

    code = "invalid_resource"
    http_status = 500

    def __init__(self, resource_type: str, paths: tuple[str, ...]) -> None:
        super().__init__(f"The app built an invalid {resource_type}; nothing was sent "
                         f"(elements: {', '.join(paths) or '-'}).")
        self.resource_type = resource_type
        self.paths = paths
