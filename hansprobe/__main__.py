import sys

from hansprobe.cli import main

sys.exit(main())
