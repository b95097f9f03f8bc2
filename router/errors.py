"""One exception hierarchy; each error knows the HTTP status and OpenAI error it answers with."""

from __future__ import annotations

import json
from enum import StrEnum


class Outcome(StrEnum):
    """What happened to one request: the session sets it, the log line and the metrics report it."""

    UPSTREAM = "upstream"  # routed to a model
    CACHE = "cache"  # answered from the semantic cache
    BLOCKED = "blocked"  # refused by a guard (jailbreak, content safety, PII policy)
    ERROR = "error"  # refused because the request or a dependency failed
    MODELS = "models"  # GET /v1/models, answered by the router
    ABANDONED = "abandoned"  # routed, but the stream ended before any answer (Envoy gave up waiting, client left)
    PASSTHROUGH = "passthrough"  # a stored response's call (GET/DELETE /v1/responses/{id}), routed unread
    UNSERVED = "unserved"  # a path the router refuses itself (404), never routed: not a request's error


class RouterError(Exception):
    """An error the client must see, rendered as an OpenAI-style error body."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str = "invalid_request"
    outcome: Outcome = Outcome.ERROR

    def __init__(self, message: str, *, param: str | None = None, status: int | None = None,
                 category: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.category = category  # the category whose rules refused a blocked request (metrics, log line)
        if status is not None:
            self.status = status

    @property
    def wire_code(self) -> str | None:
        """The `code` the client reads; `code` itself names the error in the log line and the trace."""
        return self.code

    def body(self) -> bytes:
        """The JSON body OpenAI clients parse: {"error": {"message", "type", "code", "param"}}."""
        error = {"message": self.message, "type": self.type, "code": self.wire_code, "param": self.param}
        return json.dumps({"error": error}).encode()


class InvalidRequest(RouterError):
    code = "invalid_request"


class InvalidJSON(RouterError):
    code = "invalid_json"


class ModelNotFound(RouterError):
    status = 404
    code = "model_not_found"


class ResponseNotFound(RouterError):
    """A stored response another caller created: OpenAI's own 404 for an unknown id, word for word and with `code:
    null`, so the answer never tells that the id exists. `code` names it in the log line and the trace."""

    status = 404
    code = "response_not_owned"

    def __init__(self, response_id: str):
        super().__init__(f"No response found with id '{response_id}'.")

    @property
    def wire_code(self) -> str | None:
        return None


class MethodNotAllowed(RouterError):
    status = 405
    code = "method_not_allowed"


class UnsupportedPath(RouterError):
    """A path the router does not serve: only the known API paths reach a model (an allow-list), since a model
    server may generate from any other (vLLM's /invocations, /v1/audio/*) in a shape the guards never read."""

    status = 404
    code = "unsupported_path"


class NotServed(RouterError):
    """A path clients call that neither the router nor its model servers answer (Anthropic's count_tokens): a 404
    of the router's, in the API's shape, not the default model's plain-text one."""

    status = 404
    code = "not_found"
    outcome = Outcome.UNSERVED


class UnsupportedEncoding(RouterError):
    """A compressed request body (Content-Encoding: gzip): the router would screen bytes it cannot read."""

    status = 415
    code = "unsupported_content_encoding"


class BodyTooLarge(RouterError):
    status = 413
    code = "request_too_large"


class TooManyHeaders(RouterError):
    """More headers than Envoy's limit leaves room for once the router adds its own."""

    status = 431
    code = "too_many_headers"


class TooManyUnscreenedTurns(RouterError):
    """More earlier user turns than one request screens, from a caller for whom nothing screened is remembered: no
    retry could get further, so not the 503 a client retries."""

    code = "too_many_unscreened_turns"


class JailbreakBlocked(RouterError):
    status = 403
    type = "content_policy_violation"
    code = "jailbreak_detected"
    outcome = Outcome.BLOCKED


class ContentBlocked(RouterError):
    """A plain request for harmful content (the content-safety guard), with or without jailbreak framing."""

    status = 403
    type = "content_policy_violation"
    code = "content_blocked"
    outcome = Outcome.BLOCKED


class PIIViolation(RouterError):
    status = 403
    type = "content_policy_violation"
    code = "pii_policy_violation"
    outcome = Outcome.BLOCKED


class ClassifierUnavailable(RouterError):
    """The guards could not decide and `classifier.on_failure` is `closed`: refuse rather than guess."""

    status = 503
    type = "server_error"
    code = "classifier_unavailable"


class InternalError(RouterError):
    status = 500
    type = "server_error"
    code = "internal_error"
