from bpnet.cli import main

raise SystemExit(main())
