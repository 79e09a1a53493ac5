"""Gateway keys as a projection of key issued / key revoked control events."""
