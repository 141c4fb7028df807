"""The service's browser pages: self-hosted API docs (``/docs``, ``/redoc``) and the playground (``/``).

HTTP layer only (a leaf like ``service/http/app.py``): no torch, nothing here is imported by the core.
"""
