import sys

from charlm.cli import main

sys.exit(main())
