"""What the server shows a browser: the web console (server-rendered pages on the same
services as the API), the API documentation at /docs, the authenticated proxy to dev
environments' tools, and the static files they use (vendored, no CDN)."""
