"""`hearthlm serve`: an OpenAI-compatible HTTP server with continuous batching.

    pip install "hearthlm[serve]"
    from hearthlm.serve import create_app      # an ASGI app (Starlette), for uvicorn, Ray Serve...

scheduler.py (batching, no HTTP), protocol.py (OpenAI's request and response
objects), app.py (the ASGI app), metrics.py (Prometheus), command.py (the CLI).
"""


def __getattr__(name):
    if name == "create_app":  # imported on use, so the scheduler works without the HTTP stack
        from .app import create_app
        return create_app
    raise AttributeError(f"module 'hearthlm.serve' has no attribute {name!r}")
