"""Prefect flows over the core's stages, the `graft` CLI, and example configs."""
