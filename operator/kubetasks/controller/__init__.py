"""The kopf operator: Task, PeriodicTask and WorkerPool controllers."""
