import sys

from lightning_dr2.cli import main

sys.exit(main())
