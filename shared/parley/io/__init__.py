"""The I/O shell: the worker client and the DynamoDB stores. Clients are injected."""
