"""OpenAI's shapes, rendered from a finished generation: images JSON, chat JSON and SSE.

Routes parse a request and pick a renderer; nothing here reads a request or does I/O beyond
what rendering needs (encoding images for data URIs, off the event loop).
"""
