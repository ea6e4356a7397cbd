"""Schemathesis check for hivegraph (loaded with SCHEMATHESIS_HOOKS=hooks from tests/fuzz).

`no_server_error`: no answer is a 5xx, every GraphQL error carries `extensions.code`, and none
is INTERNAL_SERVER_ERROR. Schemathesis' own `not_a_server_error` also counts typed domain
answers (NOT_FOUND for a random id, CONFLICT, FORBIDDEN, UPSTREAM_UNAVAILABLE) as server
errors; those are the contract (README "Errors"), so scripts/test runs this check instead.
"""

import json

import schemathesis


@schemathesis.check
def no_server_error(ctx, response, case):
    """Fail on a 5xx, an error without a code, or an INTERNAL_SERVER_ERROR."""
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
    try:
        body = json.loads(response.content)
    except ValueError:
        return
    errors = body.get("errors") if isinstance(body, dict) else None
    for error in errors or []:
        code = (error.get("extensions") or {}).get("code")
        if code is None or code == "INTERNAL_SERVER_ERROR":
            raise AssertionError(f"error with code {code!r}: {json.dumps(error)[:500]}")
