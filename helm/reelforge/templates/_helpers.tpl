{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "reelforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; a component name is appended to it, so it leaves room for one. */}}
{{- define "reelforge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else if contains (include "reelforge.name" .) .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "reelforge.name" .) | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "reelforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: call with (dict "root" $ "component" "gateway"). */}}
{{- define "reelforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reelforge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "reelforge.labels" -}}
helm.sh/chart: {{ include "reelforge.chart" .root }}
{{ include "reelforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: reelforge
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of release-wide objects (Secrets, ServiceAccount, rules, dashboards). */}}
{{- define "reelforge.releaseLabels" -}}
{{ include "reelforge.labels" (dict "root" . "component" "release") }}
{{- end }}

{{- define "reelforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reelforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: call with (dict "root" $ "image" .Values.image.gateway). */}}
{{- define "reelforge.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "reelforge.redisHost" -}}
{{- printf "%s-redis" (include "reelforge.fullname" .) }}
{{- end }}

{{- define "reelforge.redisPasswordSecret" -}}
{{- default (printf "%s-redis" (include "reelforge.fullname" .)) .Values.redis.existingPasswordSecret }}
{{- end }}

{{- define "reelforge.redisUrlSecret" -}}
{{- default (printf "%s-redis-url" (include "reelforge.fullname" .)) .Values.redis.external.existingSecret }}
{{- end }}

{{- define "reelforge.objectStorageSecret" -}}
{{- default (printf "%s-object-storage" (include "reelforge.fullname" .)) .Values.objectStorage.existingSecret }}
{{- end }}

{{- define "reelforge.apiKeySecret" -}}
{{- default (printf "%s-api-key" (include "reelforge.fullname" .)) .Values.apiKeyBootstrap.existingSecret }}
{{- end }}

{{/* A Secret value that survives upgrades: the one in the cluster if there is one, else a new random one.
     Call with (dict "root" $ "secret" NAME "key" KEY "value" GENERATED). */}}
{{- define "reelforge.keptSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- .value | b64enc }}
{{- end }}
{{- end }}

{{/* REELFORGE_* environment of every reelforge container. */}}
{{- define "reelforge.env" -}}
- name: REELFORGE_ENVIRONMENT
  value: {{ .Values.settings.environment | quote }}
{{- if .Values.redis.bundled }}
- name: REELFORGE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "reelforge.redisPasswordSecret" . }}
      key: redis-password
- name: REELFORGE_REDIS_URL
  value: {{ printf "redis://:$(REELFORGE_REDIS_PASSWORD)@%s:6379/0" (include "reelforge.redisHost" .) | quote }}
- name: REELFORGE_BROKER_URL
  value: {{ printf "redis://:$(REELFORGE_REDIS_PASSWORD)@%s:6379/1" (include "reelforge.redisHost" .) | quote }}
{{- else }}
- name: REELFORGE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "reelforge.redisUrlSecret" . }}
      key: {{ .Values.redis.external.secretKeys.url }}
- name: REELFORGE_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "reelforge.redisUrlSecret" . }}
      key: {{ .Values.redis.external.secretKeys.brokerUrl }}
{{- end }}
- name: REELFORGE_S3_ENDPOINT_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "reelforge.objectStorageSecret" . }}
      key: {{ .Values.objectStorage.secretKeys.endpointUrl }}
- name: REELFORGE_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "reelforge.objectStorageSecret" . }}
      key: {{ .Values.objectStorage.secretKeys.accessKeyId }}
- name: REELFORGE_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "reelforge.objectStorageSecret" . }}
      key: {{ .Values.objectStorage.secretKeys.secretAccessKey }}
- name: REELFORGE_S3_BUCKET
  value: {{ .Values.objectStorage.bucket | quote }}
- name: REELFORGE_S3_REGION
  value: {{ .Values.objectStorage.region | quote }}
{{- with .Values.objectStorage.publicEndpointUrl }}
- name: REELFORGE_S3_PUBLIC_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: REELFORGE_GPU_TASK_TIME_LIMIT_S
  value: {{ .Values.settings.gpuTaskTimeLimitSeconds | quote }}
- name: REELFORGE_MAX_ATTEMPTS
  value: {{ .Values.settings.maxAttempts | quote }}
- name: REELFORGE_HEARTBEAT_FILE
  value: /run/reelforge/heartbeat
- name: REELFORGE_READY_FILE
  value: /run/reelforge/ready
- name: XDG_CACHE_HOME
  value: /tmp/cache
{{- range $name, $value := .Values.settings.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Writable paths under a read-only root filesystem: /tmp and the probes' run directory. */}}
{{- define "reelforge.volumes" -}}
- name: tmp
  emptyDir: {}
- name: run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}

{{- define "reelforge.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: run
  mountPath: /run/reelforge
{{- end }}

{{/* Pod-level fields every reelforge pod shares: call with (dict "root" $ "values" .Values.gateway). */}}
{{- define "reelforge.podSpecCommon" -}}
serviceAccountName: {{ include "reelforge.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* An exec probe running `reelforge worker-health`: call with (dict "root" $ "args" LIST). */}}
{{- define "reelforge.workerHealthProbe" -}}
exec:
  command: [reelforge, worker-health, --max-age, {{ .root.Values.workers.heartbeatMaxAgeSeconds | quote }}{{ range .args }}, {{ . }}{{ end }}]
timeoutSeconds: 10
{{- end }}
