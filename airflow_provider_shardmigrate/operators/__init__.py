"""Operators: per-shard apply/rollback, canary gate, auto-rollback, report and the final gate."""
