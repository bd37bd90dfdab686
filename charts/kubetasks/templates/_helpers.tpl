{{/* The chart name, overridable with nameOverride. */}}
{{- define "kubetasks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: fullnameOverride, else release-chart (once). */}}
{{- define "kubetasks.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version for the helm.sh/chart label. */}}
{{- define "kubetasks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource: recommended app.kubernetes.io labels plus commonLabels. */}}
{{- define "kubetasks.labels" -}}
helm.sh/chart: {{ include "kubetasks.chart" . }}
app.kubernetes.io/name: {{ include "kubetasks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetasks
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "kubetasks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetasks.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's resources: common labels plus its component label. */}}
{{- define "kubetasks.componentLabels" -}}
{{ include "kubetasks.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: digest wins over tag. */}}
{{- define "kubetasks.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "kubetasks.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "kubetasks.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the workers' ServiceAccount (the operator puts it on every worker Deployment). */}}
{{- define "kubetasks.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (printf "%s-worker" (include "kubetasks.fullname" .)) .Values.worker.serviceAccount.name }}
{{- else }}
{{- required "worker.serviceAccount.name is required when worker.serviceAccount.create is false" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the dashboard's ServiceAccount (always created with the dashboard). */}}
{{- define "kubetasks.dashboard.serviceAccountName" -}}
{{- default (printf "%s-dashboard" (include "kubetasks.fullname" .)) .Values.dashboard.serviceAccount.name }}
{{- end }}

{{/* Namespaces the operator watches (JSON list): the listed ones, else the release's; empty only with allNamespaces. */}}
{{- define "kubetasks.watchNamespaces" -}}
{{- if .Values.operator.watch.allNamespaces }}
{{- toJson (list) }}
{{- else }}
{{- toJson (uniq (default (list .Release.Namespace) .Values.operator.watch.namespaces)) }}
{{- end }}
{{- end }}

{{/* Namespaces that get the worker ServiceAccount and Role: the watched ones (the release's when all are) plus extras. */}}
{{- define "kubetasks.workerNamespaces" -}}
{{- $watched := include "kubetasks.watchNamespaces" . | fromJsonArray }}
{{- toJson (uniq (concat (default (list .Release.Namespace) $watched) .Values.worker.extraNamespaces)) }}
{{- end }}

{{/* Name of the bundled Redis Service and StatefulSet. */}}
{{- define "kubetasks.redis.fullname" -}}
{{- printf "%s-redis" (include "kubetasks.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the Secret holding the Redis password, empty when there is none. */}}
{{- define "kubetasks.redis.secretName" -}}
{{- if .Values.redis.enabled }}
{{- default (include "kubetasks.redis.fullname" .) .Values.redis.auth.existingSecret }}
{{- else }}
{{- .Values.redis.external.existingSecret }}
{{- end }}
{{- end }}

{{/* The operator's Redis user: the bundled Redis's one full-rights user, or the external one
(empty: the default user). */}}
{{- define "kubetasks.redis.username" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.username }}
{{- else }}
{{- .Values.redis.external.username }}
{{- end }}
{{- end }}

{{/* "true" when each WorkerPool gets its own Redis user; they need a password to derive
theirs from. */}}
{{- define "kubetasks.redis.poolUsers" -}}
{{- if .Values.redis.poolUsers.enabled }}
{{- if not (include "kubetasks.redis.secretName" .) }}
{{- fail "redis.poolUsers.enabled needs a Redis password (redis.external.existingSecret): each pool's password is derived from it; for a Redis without one set redis.poolUsers.enabled=false" }}
{{- end }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/* Key of the Redis password in that Secret. */}}
{{- define "kubetasks.redis.secretKey" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.redis.external.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* Where the external Redis CA certificate is mounted in the operator container. */}}
{{- define "kubetasks.redis.caPath" -}}
/etc/kubetasks/redis-tls/{{ .Values.redis.external.tls.caKey }}
{{- end }}

{{/* KUBETASKS_REDIS_URL: the bundled Service, or the external URL (plus the CA path for TLS). */}}
{{- define "kubetasks.redis.url" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s.%s.svc:%d/0" (include "kubetasks.redis.fullname" .) .Release.Namespace (int .Values.redis.port) }}
{{- else }}
{{- $url := required "redis.external.url is required when redis.enabled is false" .Values.redis.external.url }}
{{- if .Values.redis.external.tls.caSecret }}
{{- $sep := ternary "&" "?" (contains "?" $url) }}
{{- printf "%s%sssl_ca_certs=%s" $url $sep (include "kubetasks.redis.caPath" .) }}
{{- else }}
{{- $url }}
{{- end }}
{{- end }}
{{- end }}

{{/* Env vars that point a kubetasks process at Redis: URL, user, and the password from its
Secret. */}}
{{- define "kubetasks.redis.env" -}}
- name: KUBETASKS_REDIS_URL
  value: {{ include "kubetasks.redis.url" . | quote }}
{{- with include "kubetasks.redis.username" . }}
- name: KUBETASKS_REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- $secret := include "kubetasks.redis.secretName" . }}
{{- if $secret }}
- name: KUBETASKS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "kubetasks.redis.secretKey" . }}
{{- end }}
{{- end }}

{{/* Host and port of the Redis server, for NetworkPolicy egress: a dict with host and port. */}}
{{- define "kubetasks.redis.endpoint" -}}
{{- if .Values.redis.enabled }}
{{- toJson (dict "host" (include "kubetasks.redis.fullname" .) "port" (int .Values.redis.port)) }}
{{- else }}
{{- $u := urlParse .Values.redis.external.url }}
{{- $parts := splitList ":" (last (splitList "@" $u.host)) }}
{{- $default := ternary 6380 6379 (eq $u.scheme "rediss") }}
{{- $port := ternary (last $parts) (toString $default) (gt (len $parts) 1) }}
{{- toJson (dict "host" (first $parts) "port" (int $port)) }}
{{- end }}
{{- end }}

{{/* Rules on namespaced resources that the operator uses (a Role per namespace, or a ClusterRole). */}}
{{- define "kubetasks.operator.namespacedRules" -}}
# Its own resources: watch them, add finalizers and kopf's annotations, write status.
- apiGroups: ["kubetasks.dev"]
  resources: ["tasks", "periodictasks", "workerpools", "tasksets"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Child Tasks of PeriodicTasks, and deletion of finished Tasks and TaskSets
# (ttlSecondsAfterFinished).
- apiGroups: ["kubetasks.dev"]
  resources: ["tasks"]
  verbs: ["create", "delete"]
- apiGroups: ["kubetasks.dev"]
  resources: ["tasksets"]
  verbs: ["delete"]
- apiGroups: ["kubetasks.dev"]
  resources: ["tasks/status", "periodictasks/status", "workerpools/status", "tasksets/status"]
  verbs: ["patch", "update"]
# Owner references with blockOwnerDeletion (child Tasks, worker Deployments).
- apiGroups: ["kubetasks.dev"]
  resources: ["tasks/finalizers", "periodictasks/finalizers", "workerpools/finalizers",
              "tasksets/finalizers"]
  verbs: ["update"]
# One worker Deployment per WorkerPool, server-side applied (its spec and its scale) and
# read back; the garbage collector deletes it with its pool.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
# Worker pods: watch them, to take back what a vanished pod held.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Worker pods: the pod-deletion-cost annotation, so that scaling down removes idle pods
# first. The only write on Pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch"]
# The labels of a ServiceAccount a WorkerPool names (poolPolicy.serviceAccountSelector).
# Never a read of Secrets or ConfigMaps: env sources are allowed by name only.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
{{- if include "kubetasks.redis.poolUsers" . }}
# Each WorkerPool's Redis credentials (redis.poolUsers): created once, named after what they
# hold, deleted with the pool by the garbage collector. Create only: no read, list, update
# or delete of any Secret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}
# Events on the resources it handles (kopf posts them through both APIs).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and .Values.operator.peering.name (not .Values.operator.watch.allNamespaces) }}
# kopf peering between operator replicas (namespaced peering objects).
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Rules on cluster-scoped resources that kopf itself needs wherever it watches. */}}
{{- define "kubetasks.operator.clusterRules" -}}
# kopf: notice namespaces and CRDs appearing and going away.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if and .Values.operator.peering.name .Values.operator.watch.allNamespaces }}
# kopf peering between operator replicas (cluster-wide peering object).
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Cross-value checks that need the release namespace, which values.schema.json cannot see. */}}
{{- define "kubetasks.validate" -}}
{{- if and .Values.operator.watch.allNamespaces .Values.operator.watch.namespaces }}
{{- fail (printf "operator.watch.allNamespaces and operator.watch.namespaces %v exclude each other: list namespaces, or watch all of them" .Values.operator.watch.namespaces) }}
{{- end }}
{{- $watched := include "kubetasks.watchNamespaces" . | fromJsonArray }}
{{- if and .Values.workerPool.create $watched (not (has .Release.Namespace $watched)) }}
{{- fail (printf "workerPool.create puts the default WorkerPool in namespace %q, which operator.watch.namespaces %v does not include: add %q to it, or set workerPool.create=false" .Release.Namespace $watched .Release.Namespace) }}
{{- end }}
{{- if and .Values.workerPool.create (gt (int .Values.workerPool.minReplicas) (int .Values.workerPool.maxReplicas)) }}
{{- fail (printf "workerPool.minReplicas (%v) must not exceed workerPool.maxReplicas (%v)" .Values.workerPool.minReplicas .Values.workerPool.maxReplicas) }}
{{- end }}
{{- if eq (int .Values.operator.metrics.port) (int .Values.operator.healthPort) }}
{{- fail (printf "operator.metrics.port and operator.healthPort must differ (both are %v)" .Values.operator.healthPort) }}
{{- end }}
{{- $queues := list }}
{{- range .Values.workerPool.queues }}
{{- if has .name $queues }}
{{- fail (printf "workerPool.queues lists queue %q twice" .name) }}
{{- end }}
{{- $queues = append $queues .name }}
{{- end }}
{{- if and (gt (int .Values.operator.replicas) 1) (or (not .Values.operator.peering.name) (eq (toString .Values.operator.peering.priority) "<nil>")) }}
{{- fail "operator.replicas above 1 needs operator.peering.name and operator.peering.priority: kopf operators freeze each other by priority instead of electing a leader" }}
{{- end }}
{{- end }}

{{/*
Annotations of a custom resource whose CRD this release may itself be installing. Helm resolves
every kind of the main manifest before it creates anything, so while the cluster does not serve
the kind (a first install with crds.install=true) the resource must be a post-install hook.
A hook-born resource stays a hook (marked kubetasks.dev/helm-hook): Helm would adopt it into the
release without applying changed values, so each upgrade recreates it instead. A resource whose
CRD was served at install is an ordinary release resource, updated in place. Call with
(dict "ctx" $ "api" "group/version" "kind" "Kind" "name" NAME "namespace" NS "weight" "10").
*/}}
{{- define "kubetasks.customResourceAnnotations" -}}
{{- $served := .ctx.Capabilities.APIVersions.Has (printf "%s/%s" .api .kind) }}
{{- $hookBorn := false }}
{{- if $served }}
{{- /* lookup fails on a kind the server does not serve, so only here. */}}
{{- $live := lookup .api .kind .namespace .name | default dict }}
{{- $hookBorn = eq "true" (dig "metadata" "annotations" "kubetasks.dev/helm-hook" "" $live) }}
{{- end }}
{{- if or (not $served) $hookBorn -}}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation
kubetasks.dev/helm-hook: "true"
{{- else -}}
kubetasks.dev/helm-hook: "false"
{{- end }}
{{- end }}
