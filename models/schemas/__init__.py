"""Pydantic wire schemas: what crosses the HTTP border."""
