"""The buffered entry point: API Gateway → Lambda → Mangum → the shared app."""

import os

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

# Mangum stops its event loop when an invocation returns: usage must be written before that.
os.environ.setdefault("PARLEY_METER_AFTER_RESPONSE", "0")

from parley.web.app import app  # noqa: E402

# Batch results (application/x-jsonl) are text: sent as is, not base64 (the API has no binary types).
handler = Mangum(app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/x-jsonl"])
