"""Where robustft keeps named datasets and decoded-image caches, overridable by environment variables."""

import os
from pathlib import Path

import platformdirs

__all__ = ["default_cache_dir", "default_data_root"]


def default_cache_dir() -> Path:
    """``$ROBUSTFT_CACHE``, else the platform's user cache directory for robustft."""
    return Path(os.environ.get("ROBUSTFT_CACHE") or platformdirs.user_cache_dir("robustft")).expanduser()


def default_data_root() -> Path:
    """``$ROBUSTFT_DATA``, else ``<default_cache_dir()>/data``: where named datasets (``robustft datasets``) live."""
    env = os.environ.get("ROBUSTFT_DATA")
    return Path(env).expanduser() if env else default_cache_dir() / "data"
