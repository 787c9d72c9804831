import sys

from medfuse_core.cli import main

sys.exit(main())
