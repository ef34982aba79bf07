"""Experiment trackers: observer plugins, off by default (enable one in the config's `plugins:`)."""
