"""`python boot.py` serves the app on 0.0.0.0:8080, as the course's boot.py does.

Configuration comes from the environment (OAUTH2_ISSUER, MODEL_PATH, PORT, ...); see the README.
"""

import sys
from pathlib import Path

try:
    import cats_dogs_other  # noqa: F401
except ImportError:  # run from a checkout without `make install`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from cats_dogs_other.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve"]))
