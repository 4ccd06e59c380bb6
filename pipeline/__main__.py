from pipeline.malloc import reexec_with_tcmalloc

reexec_with_tcmalloc()  # before anything else runs: a malloc is chosen when the process starts

from pipeline.cli import main  # noqa: E402

raise SystemExit(main())
