"""Test settings: the service's settings with a throwaway data directory and a fixed key."""

import os
import tempfile

os.environ.setdefault("BATCHEXPORTS_DATA_DIR", tempfile.mkdtemp(prefix="batchexports-test-"))
os.environ.setdefault("BATCHEXPORTS_SECRET_KEY", "test-only-secret-key")

from batchexports.settings import *  # noqa: F403

# Hashing test users' passwords with PBKDF2 would cost ~0.4 s per test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# API tests witness what the API asks of the engine; the engine tests switch to the Temporal one.
BATCHEXPORTS_ENGINE = "batchexports.exports.recording_engine.RecordingEngine"
