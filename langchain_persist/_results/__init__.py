"""Results, logs and traces: the seed's service, the validation and event rows it shares with
the background writer, the storage interfaces the write path needs, and read-back views."""
