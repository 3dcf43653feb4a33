"""What the server shows a browser: static files (vendored, no CDN) and, later, the console."""
