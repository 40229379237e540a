"""The soak stack's settings, shared by the test and the server process."""

from parley.settings import Settings
from tests.stack import tables_named

SOAK_SETTINGS = Settings(
    **tables_named("soak"),
    ping_seconds=1.0,
)
