#!/bin/sh
# Entry point of the streaming function (handler "run.sh"): the Lambda Web Adapter layer's
# /opt/bootstrap (AWS_LAMBDA_EXEC_WRAPPER) runs it, then forwards each Function URL request to
# this server and streams its response back as it is written.
# Python path as Lambda gives handlers: the function code, then the layer, then the runtime's own.
set -e
export PYTHONPATH="${LAMBDA_TASK_ROOT:?}:/opt/python${PYTHONPATH:+:$PYTHONPATH}"
# stdout is the function's log (with the embedded metrics): write each line as it comes.
export PYTHONUNBUFFERED=1
cd "$LAMBDA_TASK_ROOT"
exec python -m promptcache_tools.cli serve --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}"
