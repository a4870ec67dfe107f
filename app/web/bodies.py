"""Request bodies of the JSON routes: strict pydantic models (no coercion, no extra fields).

A body that does not validate is a 400 ``invalid_body`` whose message names the field and
what was expected; the value sent is never echoed (it may be PHI). Every JSON route parses
its body here, so a wrong type is never a 500 and never a coerced value (``["a"]`` is not
the text ``"['a']"``).
"""

from __future__ import annotations

from typing import Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import AppError
from app.review.workflow import FHIR_ID

T = TypeVar("T", bound=BaseModel)


class StrictBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class DraftRequest(StrictBody):
    """``POST /api/drafts``."""

    task: str = Field(min_length=1, max_length=64)
    question: str | None = Field(default=None, max_length=4000)
    write: bool = True


class ReviewRequest(StrictBody):
    """``POST /api/drafts/<run>/review``. ``text`` length is checked by the review (413)."""

    action: Literal["approve", "edit", "reject"]
    version: str | None = Field(default=None, pattern=f"^{FHIR_ID.pattern}$")
    text: str | None = None
    reason: str | None = Field(default=None, max_length=64)  # one of REJECT_REASONS (review)
    ack_unsupported: bool = False


def parse_body(model: type[T]) -> T:
    """The request's JSON body as ``model``, or a 400 naming the first bad field."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise AppError("Send a JSON object.", code="bad_request", http_status=400)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_input=False, include_url=False)[0]
        if err["type"] == "extra_forbidden":  # the unknown key is not echoed either
            message = f"Unknown field; the fields are: {', '.join(model.model_fields)}."
        else:
            field = ".".join(str(x) for x in err["loc"]) or "body"
            message = f"Field '{field}': {err['msg']}."
        raise AppError(message, code="invalid_body", http_status=400) from None
