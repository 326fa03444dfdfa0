"""schemathesis hooks for the fuzz run (SCHEMATHESIS_HOOKS=silo_fuzz_hooks).

The fuzzer may do anything its token may, including revoking that token or
deactivating its own user, after which every request is a 401 and nothing
else is tested. Those two requests are pointed elsewhere. Requests to the
workers' intake are pointed, now and then, at the live attempt whose token
the run holds, so that they get past authentication to the checks behind.
"""

from __future__ import annotations

import os
import random
from typing import Any

import schemathesis

OWN_TOKEN_ID = int(os.environ.get("SILO_FUZZ_TOKEN_ID", "0"))
OWN_USER = os.environ.get("SILO_FUZZ_USER", "")
JOB_ID = int(os.environ.get("SILO_FUZZ_JOB_ID", "0"))
ATTEMPT = int(os.environ.get("SILO_FUZZ_ATTEMPT", "0"))


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: Any) -> None:
    path = case.operation.path
    parameters = case.path_parameters
    if parameters is None:
        return
    # Some phases hand over path parameters as the text they are sent as.
    if path == "/v1/tokens/{token_id}/revoke" and str(parameters.get("token_id")) == str(
        OWN_TOKEN_ID
    ):
        parameters["token_id"] = OWN_TOKEN_ID + 1_000_000
    elif path == "/v1/users/{name}" and str(parameters.get("name")) == OWN_USER:
        parameters["name"] = OWN_USER + "-other"
    elif (
        "/attempts/" in path
        # Only ids that were valid already: a case meant to break the schema stays broken.
        and all(str(parameters.get(name)).isdigit() for name in ("job_id", "attempt"))
        and random.random() < 0.5
    ):
        parameters["job_id"], parameters["attempt"] = JOB_ID, ATTEMPT
