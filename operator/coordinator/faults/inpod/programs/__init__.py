"""Programs the in-pod agent runs inside its container (copied to /opt/coordinator-agent/ in the tools image).

Each is a standalone script: the standard library plus Debian-packaged libraries only, no import of
``coordinator``. They live in the package so that the unit tests and the operator's command builders import
the same code the agent runs.
"""
