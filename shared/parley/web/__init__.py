"""The FastAPI shell: routes, auth, error envelopes. `parley.web.app:app` is the ASGI app."""
