"""Developer and operator scripts (run them as files: `python3 scripts/cluster.py`)."""
