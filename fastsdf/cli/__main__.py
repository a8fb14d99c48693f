import sys

from fastsdf.cli import main

sys.exit(main())
