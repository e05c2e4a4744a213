"""A self-hosted Pusher-protocol server (WebSocket protocol 7, the HTTP API, webhooks)."""
