"""Pure rules about text and JSON that every door shares (web, CLI, workers).

Plain Python: imports neither Django nor the apps, so the import services, the API
parsers, the run bodies and the ML core can all apply exactly the same rules.
"""
