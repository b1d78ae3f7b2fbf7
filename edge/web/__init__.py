"""The public HTTP side: Host -> bucket -> object, COS-style errors, the access log."""
