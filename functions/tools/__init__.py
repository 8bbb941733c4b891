"""promptcache's offline tools: the CLI (``promptcache``), the local server, eval and calibrate.

They stand on the core (``promptcache``) and the handlers (``promptcache_handlers``), never the
other way round; none of them is in the Lambda layer. The streaming function's code carries the
CLI and the server, which it runs (``run.sh``).
"""
