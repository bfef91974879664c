"""SQL shared by the retrieval modules."""

from __future__ import annotations

# A CTE that turns `synchronous_commit` off for the statement's own transaction when the
# statement runs alone (%(alone)s: not inside a caller's transaction, whose setting is kept).
# For bookkeeping written often to rows many processes share, or once per page: the commit
# then returns without waiting for the disk flush. It is visible to every other session at
# once and is lost only if PostgreSQL itself stops within a fraction of a second (the WAL
# writer flushes it; the next synchronous commit of any session flushes it with its own).
# The statement must read from `async_commit` (FROM or a join), or PostgreSQL skips the CTE.
ASYNC_COMMIT = """async_commit AS (
  SELECT set_config('synchronous_commit',
                    CASE WHEN %(alone)s THEN 'off' ELSE current_setting('synchronous_commit') END,
                    true)
)"""
