"""All SQL lives here: one module per table group.

The service's functions take a `Connection` and are synchronous (their async twins run them in
a worker thread); the saver's are plans (`..plans`): generators of statements that a sync and
an async runner both drive.
"""
