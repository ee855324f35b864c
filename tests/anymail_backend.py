"""anymail's own test backend, told by the test how the provider answers."""

from __future__ import annotations

from typing import Any

from anymail.backends.test import EmailBackend as AnymailTestBackend


class EmailBackend(AnymailTestBackend):
    #: An AnymailAPIError to raise, or an AnymailRecipientStatus to return.
    response: Any = None

    def post_to_esp(self, payload: Any, message: Any) -> Any:
        if type(self).response is not None:
            message.anymail_test_response = type(self).response
        return super().post_to_esp(payload, message)
