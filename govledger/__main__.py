"""`python -m govledger`."""

from govledger.cli import main

raise SystemExit(main())
