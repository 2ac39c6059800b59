"""The one way the project turns content into a short id.

Run ids, cache keys and workload digests all hash canonical JSON with SHA-256 cut to 16
hex digits: short enough for file names and tables, long enough that two different
configurations of one study never collide in practice. Keeping it in one place keeps
those ids stable: a second copy that drifted (another separator, another length) would
silently re-run every stored run or orphan every cache entry.
"""

from __future__ import annotations

import hashlib
import json

SHORT_HASH_LENGTH = 16


def short_hash(text: str) -> str:
    """SHA-256 of ``text``, first 16 hex digits."""
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT_HASH_LENGTH]


def config_key(*parts: object) -> str:
    """A short stable hash of a configuration (JSON of its parts, keys sorted)."""
    return short_hash(json.dumps(parts, sort_keys=True, default=str))
