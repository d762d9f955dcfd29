"""The erasure endpoint's declaration (its Structs are in gateway/erasure/model.py)."""

from __future__ import annotations

from gateway.auth.keys import Role
from gateway.erasure.model import ErasureRequest, ErasureResult
from gateway.web.contract import Operation
from gateway.web.http import PREFIX

OPERATIONS = (
    Operation(
        "eraseSubject",
        "post",
        f"{PREFIX}/erasures",
        "Erase one data subject's personal data from the tenant's stored api_logs, webhook "
        "events and delivery attempts (admin)",
        (Role.ADMIN,),
        ErasureResult,
        body=ErasureRequest,
        description="Refusals answer 422 invalid_erasure (the field named in `field`). "
        "The answer holds counts only, never an erased value.",
    ),
)
