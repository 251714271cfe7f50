"""Writes of the labeling domain: one module per entity, functions named `<entity>_<action>`.

Services take keyword-only, typed arguments, hold the transactions and raise
`core.exceptions.ApplicationError` (400) or `ConflictError` (409) for user-facing errors.
Reads and permission checks live in `labeling.selectors`.
"""
