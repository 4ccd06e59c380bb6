import sys

from pipeline.malloc import reexec_with_tcmalloc

if __name__ == "__main__":
    reexec_with_tcmalloc()  # measure the malloc `python -m pipeline` runs on
    from bench.run import main

    sys.exit(main())
