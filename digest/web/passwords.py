"""Moved to `digest.passwords`; this name stays only until every importer follows (tests/test_schedule.py)."""

from __future__ import annotations

from ..passwords import HASH_ENV, PasswordHashError, configured_hash, hash_password, verify_password

__all__ = ["HASH_ENV", "PasswordHashError", "configured_hash", "hash_password", "verify_password"]
