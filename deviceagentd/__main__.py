"""`python -m deviceagentd` is the same as the `deviceagentd` command."""

from deviceagentd.cli import main

raise SystemExit(main())
