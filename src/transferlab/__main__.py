from transferlab.cli import main

raise SystemExit(main())
