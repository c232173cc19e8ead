"""`python -m bench_lib` (with scripts/ on sys.path): what `scripts/bench` runs."""

from bench_lib.main import main

raise SystemExit(main())
