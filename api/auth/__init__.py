"""API keys and roles (``sdk`` < ``analyst`` < ``admin``): issuing, revoking, and checking them on each request."""
