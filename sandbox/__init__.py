"""EHR sandbox for development, demos and tests: sekmet-fhir behind a SMART
authorization server (SMART App Launch 2.2.0) and a scope-enforcing FHIR proxy."""

from sandbox.server import Sandbox

__all__ = ["Sandbox"]
