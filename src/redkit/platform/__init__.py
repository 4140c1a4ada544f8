"""The platform behind ``redkit up``: the brief's multi-project system, built on redkit.

One module per part, each a separate process under ``redkit up`` (see :mod:`.supervisor`):

- :mod:`.postgres`: the embedded PostgreSQL server (or ``DATABASE_URL``);
- :mod:`.db`: the platform's tables (users, projects, memberships, deployments);
- :mod:`.provision`: a project's own database, role and Valkey ACL user;
- :mod:`.mail`: the SMTP sink and the ``email`` job;
- :mod:`.services`: the FastAPI apps (gateway, auth, projects) and the worker.

It uses redkit's public API only, so it doubles as the largest example of using redkit.
Needs the ``platform`` extra: ``pip install 'redkit[web,platform]'``.
"""
