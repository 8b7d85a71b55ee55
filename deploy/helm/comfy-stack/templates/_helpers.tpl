{{/* Names: every object is <release>-<chart>-<part>, cut to Kubernetes' 63 characters. */}}
{{- define "comfy-stack.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "comfy-stack.name" -}}
{{- printf "%s-%s" (include "comfy-stack.fullname" .root) .part -}}
{{- end -}}

{{- define "comfy-stack.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "comfy-stack.labels" -}}
{{ include "comfy-stack.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "comfy-stack.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "comfy-stack.fullname" .)) -}}
{{- end -}}

{{/* The Secret and key holding the Redis URL. */}}
{{- define "comfy-stack.redisUrlRef" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
name: {{ .Values.externalRedis.existingSecret }}
key: {{ .Values.externalRedis.existingSecretKey }}
{{- else -}}
name: {{ include "comfy-stack.secretName" . }}
key: redis-url
{{- end -}}
{{- end -}}

{{- define "comfy-stack.image" -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{/* The balancer's address inside the cluster (the services' drain hook calls it). */}}
{{- define "comfy-stack.balancerUrl" -}}
{{- printf "http://%s:%v" (include "comfy-stack.name" (dict "root" . "part" "balancer")) .Values.balancer.service.port -}}
{{- end -}}

{{/* A container as locked down as the compose ones: read-only root, no capabilities, no
     privilege escalation, never root. */}}
{{- define "comfy-stack.containerSecurity" -}}
securityContext:
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
{{- end -}}

{{- define "comfy-stack.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  fsGroup: {{ .uid }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* One env entry per name: value of a map, for the extraEnv values. */}}
{{- define "comfy-stack.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end -}}

{{/* The output store's settings, for a process whose variables start with .prefix. */}}
{{- define "comfy-stack.outputsEnv" -}}
{{- $o := .root.Values.outputs -}}
- name: {{ .prefix }}_OUTPUTS_TTL_S
  value: {{ $o.ttlSeconds | quote }}
- name: {{ .prefix }}_OUTPUTS_MAX_BYTES
  value: {{ $o.maxBytes | quote }}
{{- if eq $o.backend "s3" }}
- name: {{ .prefix }}_OUTPUTS_BACKEND
  value: s3
- name: {{ .prefix }}_OUTPUTS_S3_BUCKET
  value: {{ required "outputs.s3.bucket is required with outputs.backend s3" $o.s3.bucket | quote }}
- name: {{ .prefix }}_OUTPUTS_S3_PREFIX
  value: {{ $o.s3.prefix | quote }}
{{- with $o.s3.endpointUrl }}
- name: {{ $.prefix }}_OUTPUTS_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $o.s3.region }}
- name: {{ $.prefix }}_OUTPUTS_S3_REGION
  value: {{ . | quote }}
{{- end }}
- name: {{ .prefix }}_OUTPUTS_S3_ADDRESSING_STYLE
  value: {{ $o.s3.addressingStyle | quote }}
{{- with $o.s3.existingSecret }}
- name: {{ $.prefix }}_OUTPUTS_S3_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ . }}, key: access-key-id}}
- name: {{ $.prefix }}_OUTPUTS_S3_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ . }}, key: secret-access-key}}
{{- end }}
{{- else if eq $o.backend "pvc" }}
- name: {{ .prefix }}_OUTPUTS_DIR
  value: /data/outputs
{{- else }}
{{- fail (printf "outputs.backend must be pvc or s3, not %q" $o.backend) }}
{{- end }}
{{- end -}}

{{- define "comfy-stack.outputsVolume" -}}
{{- if eq .Values.outputs.backend "pvc" }}
- name: outputs
  persistentVolumeClaim:
    claimName: {{ .Values.outputs.pvc.existingClaim | default (include "comfy-stack.name" (dict "root" . "part" "outputs")) }}
{{- end }}
{{- end -}}

{{- define "comfy-stack.outputsMount" -}}
{{- if eq .Values.outputs.backend "pvc" }}
- name: outputs
  mountPath: /data/outputs
{{- end }}
{{- end -}}

{{- define "comfy-stack.logdyEnv" -}}
{{- if .root.Values.logdy.enabled }}
- name: {{ .prefix }}_LOGDY
  value: {{ printf "%s:8233" (include "comfy-stack.name" (dict "root" .root "part" "logdy")) }}
{{- end }}
{{- end -}}

{{/* What the node lifecycle script (files/node_lifecycle.py) reads. */}}
{{- define "comfy-stack.lifecycleEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: NODE_LIFECYCLE_NODE_ID
  value: $(POD_NAME)
- name: NODE_LIFECYCLE_BALANCER_URL
  value: {{ include "comfy-stack.balancerUrl" . }}
- name: NODE_LIFECYCLE_ADMIN_KEY_FILE
  value: /run/comfy-secrets/admin-key
{{- end -}}

{{- define "comfy-stack.lifecycleMounts" -}}
- {name: lifecycle-script, mountPath: /opt/comfy-node, readOnly: true}
- {name: lifecycle-state, mountPath: /run/comfy-node}
- {name: admin-key, mountPath: /run/comfy-secrets, readOnly: true}
{{- end -}}
