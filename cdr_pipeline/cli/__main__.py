"""`python -m cdr_pipeline.cli`: the `cdr-pipeline` console script."""

import sys

from cdr_pipeline.cli import main

sys.exit(main())
