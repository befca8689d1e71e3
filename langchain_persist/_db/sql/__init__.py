"""All SQL lives here: one module per table group, each function taking a `Connection`.

The functions are plain and synchronous; the service and the saver run them in a transaction,
and their async twins run the same functions in a worker thread.
"""
