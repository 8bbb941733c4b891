"""Runs in a fresh interpreter started with ``-I -S`` (no site-packages, no environment paths):
imports the handlers from the unzipped artifacts only, as Lambda does (function code first, then
the layer's ``python/``), and invokes them with API Gateway v2 events.

    python -I -S invoke_artifact.py CODE_DIR LAYER_PYTHON_DIR REQUESTS.json RESULTS.json

REQUESTS.json: ``[{"handler", "method", "path", "headers", "body"}, ...]``, invoked in order in one
process (one cold start per handler module). RESULTS.json gets each handler result and the file
every key module was imported from.
"""

import importlib
import json
import sys

code_dir, layer_dir, requests_path, results_path = sys.argv[1:5]
sys.path[:0] = [code_dir, layer_dir]

from promptcache_tools.server import LocalContext, to_event  # noqa: E402

modules = {}
results = []
with open(requests_path, encoding="utf-8") as f:
    requests = json.load(f)
for request in requests:
    name = request["handler"]
    if name not in modules:
        modules[name] = importlib.import_module(name)
    body = request.get("body")
    event = to_event(
        request["method"],
        request["path"],
        request.get("headers", {}),
        body.encode("utf-8") if body is not None else b"",
    )
    results.append(modules[name].lambda_handler(event, LocalContext(name)))

origins = {}
for name in (
    *modules,
    "promptcache",
    "numpy",
    "httpx",
    "boto3",
    "botocore",
    "aws_lambda_powertools",
    "aws_xray_sdk.core",
):
    origins[name] = importlib.import_module(name).__file__
for name in ("onnxruntime", "tokenizers", "promptcache.adapters.local_verifier"):
    if name in sys.modules:  # imported by a handler (the verifier, with its layer)
        origins[name] = sys.modules[name].__file__

with open(results_path, "w", encoding="utf-8") as f:
    json.dump({"results": results, "origins": origins, "path": sys.path}, f)
