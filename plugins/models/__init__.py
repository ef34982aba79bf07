"""Built-in model families, each a plugin module built on timm.

`resnet` and `vit` register themselves through the `graft.plugins` entry points;
`_timm` holds what they share (parameter validation, layer groups from timm's
group_matcher) so that any further timm architecture is a few lines.
"""
