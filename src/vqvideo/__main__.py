from vqvideo.cli import main

raise SystemExit(main())
