from stream_pipeline.cli import main

raise SystemExit(main())
