"""The buffered entry point: API Gateway → Lambda → Mangum → the shared app."""

import os

from mangum import Mangum

# Mangum stops its event loop when an invocation returns: usage must be written before that.
os.environ.setdefault("PARLEY_METER_AFTER_RESPONSE", "0")

from parley.web.app import app  # noqa: E402

handler = Mangum(app, lifespan="off")
