"""Reproducible experiments run through the real pipeline (Prefect flows over the core stages)."""
