import sys

from winnode.cli import main

sys.exit(main())
