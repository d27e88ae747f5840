"""Serving the dashboard to many browsers at once: `serve` (the supervisor behind `make serve`)
and `nginx_conf` (the proxy's configuration, sticky sessions explained there)."""
