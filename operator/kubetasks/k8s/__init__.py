"""Kubernetes API access: the one place that writes Task status and Deployment scale."""
