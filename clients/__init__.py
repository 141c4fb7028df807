"""Python clients of the DreamPRM-Code service: ``PRMClient`` and ``AsyncPRMClient`` (``clients.prm``) and the
patch reranker's helpers (``clients.patch``). The wire contract is ``service.schemas``, the errors
``service.errors`` (the clients import nothing heavier)."""

from clients.prm import AsyncPRMClient, PRMClient

__all__ = ["AsyncPRMClient", "PRMClient"]
