"""Knowing, without reading the database, whether an answer is still current.

book.py keeps the generations of what changed; tracking.py collects what each
transaction changed and publishes it on commit; listener.py brings the other
processes' commits (PostgreSQL LISTEN/NOTIFY).
"""
