"""Tests of the telemetry recorders (a package, so helpers import relatively)."""
