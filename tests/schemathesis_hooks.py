"""Loaded by the schemathesis run of tests/test_openapi.py (``SCHEMATHESIS_HOOKS``).

WHIP offers are ``application/sdp``, plain text on the wire; schemathesis has no
serializer for that media type, so it reuses its text/plain one.
"""

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
