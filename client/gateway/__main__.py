"""``python -m client.gateway --broker jobwire://... --listen HOST:PORT``."""

import sys

from client.gateway.cli import main

sys.exit(main())
