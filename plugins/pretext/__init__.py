"""Built-in pretext tasks."""
