"""The local development environment: a Redis-compatible server, a real Kubernetes control
plane built from the published Go modules, and a process kubelet for worker pods."""
