"""The answer to a path under `/api/` that no route serves: a JSON 404 in the API's error shape.

Without it Django would answer its HTML 404 page, or (APPEND_SLASH) a 301 with an empty body
that drops a POST's body on the floor.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.views import APIView


class EndpointNotFound(APIView):
    # Nothing to authenticate: the answer is the same for everyone and reveals nothing.
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    schema = None  # not part of the OpenAPI description

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Every method, known or not, gets the 404: this path has no route to allow or refuse it.
        raise NotFound("Endpoint not found.")
