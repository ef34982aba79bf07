"""Models as the core handles them: built from a family plugin, saved and loaded as safetensors + JSON.

`build` makes a model from its description (`model.json`: family, variant, classes,
input size); `weights` reads and writes weights safely; `saved` reopens a saved model.
"""
