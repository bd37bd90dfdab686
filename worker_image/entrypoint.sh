#!/bin/sh
# Entrypoint of the kubetasks worker image: the arguments are those of `kubetasks worker`
# (the operator passes --queues, --concurrency and --import from the WorkerPool). exec, so
# that the worker is PID 1 and receives SIGTERM itself: it stops taking work, lets running
# tasks finish within the grace period and hands the rest back to the queue.
set -eu
exec kubetasks worker "$@"
