"""The operator console: server-rendered HTML pages over dispatch-api's services, mounted
by the app factory at /console/ (sign-in with a dispatch-api token, then a session cookie).

Every page calls the same services as the API with a Caller built from the signed-in
principal, so roles and visibility are exactly the API's.
"""

from ._app import create_console

__all__ = ["create_console"]
