"""The run record: every call, its attempts and output, kept in SQLite to be looked at and resumed.

    store.py    the database: schema, migration, the one batched writer
    record.py   what the runner records (runs, calls, attempts, output) and resume's lookups
    views.py    what the command line shows (runs, show, logs, prune)
"""
