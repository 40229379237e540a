#!/bin/sh
# The streaming entry point: the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs
# this and proxies the Function URL and API Gateway streaming requests to uvicorn on $PORT.
# The Parley layer is unpacked at /opt/python.
export PYTHONPATH="/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn parley.web.app:app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log
