"""semcache's benchmarks: run from a source checkout (``semcache bench`` or ``python -m benchmarks.<name>``)."""
