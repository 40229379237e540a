#!/bin/sh
# The streaming entry point: the Lambda Web Adapter proxies the Function URL to this uvicorn.
exec python -m uvicorn parley.web.app:app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log
