"""Guard for ``--backend anthropic`` in a batch: Message Batches are opt-in.

Anthropic's Message Batches API is not eligible for zero data retention: requests and results
are kept by the vendor until the batch is deleted (up to 29 days). A batch of a whole cohort
therefore needs an explicit ``APP_ANTHROPIC_BATCH_ALLOWED=true`` (docs/batch.md).
"""

from __future__ import annotations

from app.config import Settings
from app.errors import ConfigError


def check_allowed(settings: Settings) -> None:
    if not getattr(settings, "anthropic_batch_allowed", False):
        raise ConfigError("--backend anthropic in a batch uses Message Batches, which are not eligible for zero "
                          "data retention; set APP_ANTHROPIC_BATCH_ALLOWED=true to allow it (docs/batch.md).",
                          code="anthropic_batch_not_allowed")
