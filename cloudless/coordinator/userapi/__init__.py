"""The user-facing edge: the HTTPS/JSON API (``app``), its error object, request and response
models, OpenAPI document, the roll-out, secrets, volumes and telemetry routes, and the web
console."""
