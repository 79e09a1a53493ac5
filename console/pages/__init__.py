"""One module per console page; each has `routes()`. `console/pages/common.py` holds what
they share (the window, the tenant filter, the session's call to the APIs)."""
