"""Fleet workflows, one module each; the UI, the API, Celery tasks and commands name the one they call.

- ``rings``: approvals, promote and roll back (and their plans), rollout rules and health gates, group save/delete
- ``enrollment``: enrollment secrets, enrolling, moving and decommissioning endpoints
- ``ingest``: an endpoint's token and its health report, parsed, judged and stored (the hot path)
- ``config``: the managed configuration a group's endpoints install, and importing an existing one
- ``chores``: the periodic tasks (silent endpoints, compliance snapshots, pruning reports)
- ``states``: compliance states changed outside a report (silence, re-judging), each with its change record

Nothing is re-exported here: ``from fleet.services import rings`` says which workflow a caller uses.
"""
