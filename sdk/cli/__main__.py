import sys

from edgesentry.cli import main

sys.exit(main())
