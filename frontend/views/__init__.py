"""Every HTML page of RLHF Studio, one module per area; the routes are in frontend/urls.py.

The pages are thin doors: they load through the selectors (`labeling.selectors`,
`training.selectors`), call one service at most, and render a template of
frontend/templates. Pages driven by a script are shells that get their settings through
`json_script` and talk to the REST API (the CSP allows no inline script).

- labeling.py: home, project list, ranking screen, demonstrations
- rounds.py: the admins' round dashboard
- playground.py: chat with the current policy
- settings.py (+ settings_forms.py): the project admins' settings page
"""
