"""The public HTTP API that comfy-service and comfy-balancer both serve: request and response
schemas, the error body and its handlers, the body-size limit and the SSE event stream."""
