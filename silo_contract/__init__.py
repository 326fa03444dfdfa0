"""What crosses the wire between the API, its workers and its clients.

Pydantic only, no torch, no Ray, no database: the client, the API process and
the workers all import it, and a notebook installs it with the client alone.

    fields.py     value types: JSON numbers, ids and counts bounded by their
                  columns, tags, user names, UTC times; the length limits
    status.py     job and attempt statuses, and which of them are final
    reports.py    what a worker reports (epoch events, cycle results), declared
                  once and extended for the intake and for the API's answers
    order.py      the attempt order a dispatcher hands a worker
    layout.py     where a job's files live under the artifact root
    jobs.py, studies.py, files.py, accounts.py, catalog.py, cluster.py, errors.py
                  the API's request and response bodies
"""
