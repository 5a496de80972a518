import sys

from chorus.cli.main import main

sys.exit(main())
