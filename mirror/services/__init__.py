"""Mirror workflows, one module per workflow; the UI, the API, Celery tasks and commands call them.

sync.py       request a sync, claim and run it, download what is new
publish.py    make a package a mirror's current one (and the one it replaces n-1)
imports.py    store and publish an updates.zip carried in by hand
retention.py  prune old packages that nothing serves or may roll back to
mirrors.py    save and delete mirrors (with their sync schedules) and upstreams
"""
