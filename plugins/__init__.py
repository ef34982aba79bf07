"""Built-in plugins. Each module implements hooks of the contract (graftflow.core.hookspecs), imports
only the public API (`graftflow.core`), and is declared in pyproject's `graft.plugins` entry points,
exactly like a stranger's."""
