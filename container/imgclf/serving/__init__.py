"""The ``serve`` side: gunicorn + Flask on port 8080 with /ping and /invocations."""
