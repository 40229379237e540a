"""The buffered entry point: API Gateway → Lambda → Mangum → the shared app."""

from mangum import Mangum

from parley.web.app import app

handler = Mangum(app, lifespan="off")
