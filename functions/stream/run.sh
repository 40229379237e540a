#!/bin/sh
# The streaming entry point: the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs
# this and proxies the Function URL and API Gateway streaming requests to uvicorn on $PORT.
# The Parley layer is unpacked at /opt/python.
# Lambda freezes the process when a response ends, so usage is written before its last byte.
export PARLEY_METER_AFTER_RESPONSE="${PARLEY_METER_AFTER_RESPONSE:-0}"
export PYTHONPATH="/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn parley.web.app:app --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log
