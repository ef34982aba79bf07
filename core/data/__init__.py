"""Data: the content-addressed Arrow store, splits, and loaders over it."""
