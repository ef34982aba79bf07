"""Built-in losses, one module per concern, each registered through its own entry point.

- `classification`: cross-entropy (label smoothing), focal, class-balanced, flooding
- `contrastive`: infonce (NT-Xent / MoCo-style with a negative bank), triplet (batch-hard)
- `distillation`: knowledge distillation from a teacher checkpoint
- `domain`: mmd (Gaussian-kernel maximum mean discrepancy between two domains)
"""
