"""The HTTP wing: every module of the layer that speaks HTTP.

The faces translate their dialect into the one internal request (``ChatRequest``) and the answer
back out: ``api`` (the native ``/chat`` API, entries, ``/stats``, ``/metrics``, ``/health``,
``/dashboard``), ``openai_api`` (OpenAI Chat Completions, ``/v1/models``) and ``admin_api``
(``/admin/...``). Around them: ``service`` (the handle every route passes whole), ``wire`` (body
parsing, auth, the error shapes, result headers), ``resolver`` (Powertools' router: CORS, the
error map, per-request state), ``ratelimit``, ``observability`` (logger, tracer, metrics),
``dashboard`` and ``static/``, ``prometheus``.

Arrows run one way: handlers -> http -> core -> adapters. Importing this package loads nothing:
``runtime`` (the composition root) builds the rate limiter without loading Powertools.
"""
