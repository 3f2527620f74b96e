"""A real Airflow 3.3 deployment on this machine, on loopback only: the machinery behind ``shardmigrate
airflow`` (``make airflow``) and the end-to-end tests (tests/e2e/deployment.py builds on it).

* :mod:`.processes` -- process groups: spawning with ``PR_SET_PDEATHSIG``, reading /proc, stopping groups;
* :mod:`.services` -- the local PostgreSQL (metadata databases) and Redis (a claimed DB number as a broker);
* :mod:`.api` -- a small REST v2 client;
* :mod:`.deployment` -- :class:`~.deployment.Deployment`: configuration, start, readiness, stop, the reaper;
* :mod:`.instance` -- one long-lived instance in a working folder: its lock, its state, its secrets.

Nothing here is DAG-facing: it is never imported by a DAG file, an operator or the plugin.
"""
