"""The soak stack's settings, shared by the test and the server process."""

from parley.settings import Settings

SOAK_SETTINGS = Settings(
    keys_table="soak-keys",
    routes_table="soak-routes",
    usage_table="soak-usage",
    usage_records_table="soak-usage-records",
    limits_table="soak-limits",
    accounts_table="soak-accounts",
    ping_seconds=1.0,
)
