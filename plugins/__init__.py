"""Built-in plugins. Each module implements hooks from core/hookspecs.py and is
declared in pyproject's `graft.plugins` entry points, exactly like a stranger's."""
