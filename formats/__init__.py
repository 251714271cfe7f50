"""Pure rules about the data every door shares (web, CLI, workers, the ML core): storable
text (text), strict JSON (json_safety), reading files as numbered records (records),
prompts and chats (prompts), preference records and tie groups (preferences),
demonstrations (demonstrations), and their one error (errors).

Plain Python: imports neither Django nor the apps (pyarrow only to read a Parquet file), so
the import services, the API parsers, the run bodies and the ML core all apply exactly
the same rules and give the same messages.
"""
