import sys

from graftflow.pipelines.cli import console

sys.exit(console())
