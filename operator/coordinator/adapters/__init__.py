"""I/O at the edge: the async Kubernetes client and the credentials it logs in with."""
