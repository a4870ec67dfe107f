"""Seeded, deterministic synthetic FHIR R4 data (see README.md); regenerate with generate.py."""
