"""Test-wide defaults: the development profile (production refuses the default storage secret)."""

import os

os.environ.setdefault("REELFORGE_ENVIRONMENT", "development")
