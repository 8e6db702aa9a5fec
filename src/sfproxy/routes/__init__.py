"""Thin HTTP adapters: each route takes the request, calls one function, returns its result."""
