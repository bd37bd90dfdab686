#!/usr/bin/env bash
# End to end on a kind cluster that `make kind-deploy` prepared: the chart's operator, Redis and
# default WorkerPool run in real pods built from operator/Dockerfile and worker_image/Dockerfile.
# Run by `make kind-e2e` and by .github/workflows/e2e-kind.yaml; it needs Docker, so the test
# suite on machines without a Docker engine does not run it (tests/chart covers the chart there).
#
# Checks, as a user would see them:
#   1. the operator Deployment rolls out and the default WorkerPool exists;
#   2. a malformed Task is refused at admission with a message naming the field;
#   3. a Task for example.add (from the worker image's example_handlers) reaches Succeeded with
#      result 5, which means the pool scaled up from zero and a worker pod ran it;
#   4. a Task for a handler that raises PermanentTaskError ends Failed with that error.
set -euo pipefail

KUBECTL="${KUBECTL:-kubectl}"
CONTEXT="${KIND_CONTEXT:-kind-kubetasks}"
NS="${KIND_NAMESPACE:-kubetasks}"
RELEASE="${RELEASE:-kubetasks}"
TIMEOUT="${E2E_TIMEOUT:-300s}"
k() { "$KUBECTL" --context "$CONTEXT" -n "$NS" "$@"; }

passed=0
failed=0
check() {  # check NAME COMMAND...: run one check, count and report it
    local name="$1"
    shift
    if "$@"; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name" >&2
        failed=$((failed + 1))
    fi
}

operator_ready() { k rollout status "deployment/${RELEASE}-operator" --timeout="$TIMEOUT"; }
pool_exists() { k get workerpool default -o name; }

malformed_refused() {
    local out
    if out=$(k apply -f - 2>&1 <<'TASK'
apiVersion: kubetasks.dev/v1alpha1
kind: Task
metadata:
  name: e2e-malformed
spec:
  args: [1, 2]
TASK
    ); then
        echo "a Task without spec.handler was accepted: $out" >&2
        return 1
    fi
    grep -q "handler" <<<"$out" || { echo "refusal does not name the field: $out" >&2; return 1; }
}

add_succeeds() {
    k delete task e2e-add --ignore-not-found --wait=true >/dev/null
    k apply -f - <<'TASK'
apiVersion: kubetasks.dev/v1alpha1
kind: Task
metadata:
  name: e2e-add
spec:
  handler: example.add
  args: [2, 3]
TASK
    k wait task/e2e-add --for=jsonpath='{.status.phase}'=Succeeded --timeout="$TIMEOUT"
    local result
    result=$(k get task e2e-add -o jsonpath='{.status.result}')
    [[ "$result" == "5" ]] || { echo "e2e-add result is '$result', want 5" >&2; return 1; }
}

permanent_failure() {
    k delete task e2e-invalid --ignore-not-found --wait=true >/dev/null
    k apply -f - <<'TASK'
apiVersion: kubetasks.dev/v1alpha1
kind: Task
metadata:
  name: e2e-invalid
spec:
  handler: example.validate
  args: [{quantity: 0}]
  maxRetries: 3
TASK
    k wait task/e2e-invalid --for=jsonpath='{.status.phase}'=Failed --timeout="$TIMEOUT"
    k get task e2e-invalid -o jsonpath='{.status.error.message}' | grep -q "quantity must be positive"
}

check "operator rolls out" operator_ready
check "default WorkerPool exists" pool_exists
check "malformed Task refused at admission" malformed_refused
check "example.add Task succeeds with result 5" add_succeeds
check "PermanentTaskError fails the Task at once" permanent_failure

if ((failed)); then
    echo "--- diagnostics" >&2
    k get tasks,workerpools,deployments,pods -o wide >&2 || true
    k logs "deployment/${RELEASE}-operator" --tail=100 >&2 || true
fi
echo "kind-e2e: $passed passed, $failed failed"
((failed == 0))
