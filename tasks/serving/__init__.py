"""The HTTP API's pure pieces: signed file links, the OpenAI- and JARVIS-shaped messages, Server-Sent Events, the
chat page. The server itself (FastAPI wiring, runs, limits) is :mod:`flows.serve`."""
