"""Run one Daphne process with the product's socket limits (what `run_stack` starts), for
process managers that start each process themselves: the Procfile, compose, systemd.

    python deploy/web.py [--bind 0.0.0.0] [--port 8000]     (defaults: $BIND, $PORT)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Replace this process with Daphne (signals reach it directly)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default=os.environ.get("BIND", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    import django

    django.setup()
    from chatbot.management.commands.run_stack import daphne_command

    command = daphne_command(bind=options.bind, port=options.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
