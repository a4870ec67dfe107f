"""Population screening: a cohort through Bulk Data or paged search, screened on this machine's
cores or a Ray cluster, one draft per patient with findings through the outbox (docs/batch.md)."""

from app.batch.pipeline import BatchOptions, run_batch

__all__ = ["BatchOptions", "run_batch"]
