"""Clients of the DreamPRM-Code service (SDK, CLI, CI reranker): see issue #4. Empty for now."""
