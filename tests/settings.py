"""Test settings: the service's settings with a throwaway data directory and a fixed key."""

import os
import tempfile

os.environ.setdefault("BATCHEXPORTS_DATA_DIR", tempfile.mkdtemp(prefix="batchexports-test-"))
os.environ.setdefault("BATCHEXPORTS_SECRET_KEY", "test-only-secret-key")

from batchexports.settings import *  # noqa: F403
