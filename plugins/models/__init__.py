"""Built-in model families, each a plugin module built on timm.

`resnet` and `vit` register themselves through the `graft.plugins` entry points.
What they share (parameter validation, layer groups from timm's group_matcher)
is public API in `graftflow.core`, so a family for a further timm architecture
is a few lines in a file of its own, inside this package or outside it.
"""
