import sys

from graftflow.pipelines.cli import main

sys.exit(main())
