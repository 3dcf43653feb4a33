"""HTTP API: thin FastAPI routers over the services, errors as problem+json."""
