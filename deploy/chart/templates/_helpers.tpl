{{/* The service's name, checked: it becomes NATS subject tokens and object names. */}}
{{- define "hc.svc" -}}
{{- $n := .Values.service.name -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$" $n) -}}
{{- fail (printf "service.name %q: a DNS-1123 label of at most 42 characters" $n) -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/* name of a component: <service>-<component>. */}}
{{- define "hc.name" -}}
{{- printf "%s-%s" (include "hc.svc" .root) .component -}}
{{- end -}}

{{- define "hc.selector" -}}
app.kubernetes.io/name: {{ include "hc.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "hc.labels" -}}
{{ include "hc.selector" . }}
app.kubernetes.io/part-of: headcount
app.kubernetes.io/version: {{ include "hc.tag" .root | quote }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
headcount.dev/service: {{ include "hc.svc" .root }}
{{- end -}}

{{/* A pod's labels: the workload's, and its role (NetworkPolicies select on it). */}}
{{- define "hc.podLabels" -}}
{{ include "hc.labels" . }}
headcount.dev/role: {{ .role }}
{{- end -}}

{{- define "hc.tag" -}}
{{- $t := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq $t "latest" -}}{{- fail "image.tag: a version, never latest" -}}{{- end -}}
{{- $t -}}
{{- end -}}

{{- define "hc.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry (index .root.Values.image .image) (include "hc.tag" .root) -}}
{{- end -}}

{{- define "hc.plan" -}}
{{- $p := index .Values.plans .Values.plan -}}
{{- if not $p -}}{{- fail (printf "plan %q: one of %s" .Values.plan (keys .Values.plans | sortAlpha | join ", ")) -}}{{- end -}}
{{- toJson $p -}}
{{- end -}}

{{- define "hc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.security.runAsUser }}
runAsGroup: {{ .Values.security.runAsUser }}
# Mounted Secrets (mode 0440) are readable by this group, not only by root.
fsGroup: {{ .Values.security.runAsUser }}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "hc.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* Spread replicas of one workload over every placement.topologyKeys. */}}
{{- define "hc.placement" -}}
topologySpreadConstraints:
{{- range .root.Values.placement.topologyKeys }}
- maxSkew: 1
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $.root.Values.placement.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "hc.selector" $ | nindent 6 }}
{{- end }}
{{- with .root.Values.placement.nodeSelector }}
nodeSelector: {{ toJson . }}
{{- end }}
{{- with .root.Values.placement.tolerations }}
tolerations: {{ toJson . }}
{{- end }}
{{- end -}}

{{- define "hc.natsURL" -}}
{{- if .Values.nats.install -}}
nats://{{ include "hc.name" (dict "root" . "component" "nats") }}:4222
{{- else -}}
{{- required "nats.url: with nats.install false, the URL of your NATS" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* The NATS client settings of a headcount process speaking as role
(router, member, reader): env, then volumeMounts, then volumes. */}}
{{- define "hc.natsEnv" -}}
- {name: HEADCOUNT_NATS_URL, value: {{ include "hc.natsURL" .root | quote }}}
{{- if .root.Values.nats.install }}
- {name: HEADCOUNT_NATS_TLS_CA, value: /etc/headcount/nats/ca.crt}
- {name: HEADCOUNT_NATS_TLS_CERT, value: /etc/headcount/nats/tls.crt}
- {name: HEADCOUNT_NATS_TLS_KEY, value: /etc/headcount/nats/tls.key}
{{- else }}
- {name: HEADCOUNT_NATS_CREDS, value: /etc/headcount/nats/creds}
{{- if .root.Values.nats.caSecret }}
- {name: HEADCOUNT_NATS_TLS_CA, value: /etc/headcount/nats-ca/ca.crt}
{{- end }}
{{- end }}
{{- end -}}

{{- define "hc.natsMounts" -}}
- {name: nats-identity, mountPath: /etc/headcount/nats, readOnly: true}
{{- if and (not .root.Values.nats.install) .root.Values.nats.caSecret }}
- {name: nats-ca, mountPath: /etc/headcount/nats-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "hc.natsVolumes" -}}
{{- if .root.Values.nats.install }}
- {name: nats-identity, secret: {secretName: {{ include "hc.name" (dict "root" .root "component" (printf "nats-%s" .role)) }}, defaultMode: 0440}}
{{- else }}
- name: nats-identity
  secret:
    secretName: {{ required (printf "nats.credentials.%s: a Secret with a creds key" .role) (index .root.Values.nats.credentials .role) }}
    defaultMode: 0440
{{- with .root.Values.nats.caSecret }}
- {name: nats-ca, secret: {secretName: {{ . }}}}
{{- end }}
{{- end }}
{{- end -}}

{{/* The TLS Secret names every source (generate, certManager, existing) uses. */}}
{{- define "hc.secret" -}}
{{- include "hc.name" (dict "root" .root "component" (printf "%s-tls" .what)) -}}
{{- end -}}

{{/* The HPA behaviour, rendered once for KEDA's ScaledObject and the plain HPA. */}}
{{- define "hc.behavior" -}}
{{- $s := .Values.scaling -}}
scaleDown:
  stabilizationWindowSeconds: {{ $s.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
  - {type: Percent, value: {{ $s.scaleDown.percent }}, periodSeconds: {{ $s.scaleDown.periodSeconds }}}
  - {type: Pods, value: {{ $s.scaleDown.pods }}, periodSeconds: {{ $s.scaleDown.periodSeconds }}}
scaleUp:
  stabilizationWindowSeconds: {{ $s.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
  - {type: Percent, value: {{ $s.scaleUp.percent }}, periodSeconds: {{ $s.scaleUp.periodSeconds }}}
  - {type: Pods, value: {{ $s.scaleUp.pods }}, periodSeconds: {{ $s.scaleUp.periodSeconds }}}
{{- end -}}

{{- define "hc.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/* The OTEL_* env of a container that traces (8 columns in), when
tracing.otlpEndpoint is set: the exporter's endpoint, the sampler, and the
pod as resource attributes (the OpenTelemetry Operator's variable names),
then tracing.env. */}}
{{- define "hc.tracingEnv" -}}
{{- if .Values.tracing.otlpEndpoint }}
{{- include "hc.otelEnv" . | trim | nindent 8 }}
{{- end }}
{{- end -}}

{{- define "hc.otelEnv" -}}
{{- with .Values.tracing -}}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .otlpEndpoint | quote }}}
{{- with .sampler }}
- {name: OTEL_TRACES_SAMPLER, value: {{ . | quote }}}
{{- end }}
{{- with .samplerArg }}
- {name: OTEL_TRACES_SAMPLER_ARG, value: {{ . | quote }}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: OTEL_RESOURCE_ATTRIBUTES_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
{{- $attrs := list (printf "k8s.namespace.name=%s" $.Release.Namespace) "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)" "k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME)" }}
{{- range $k, $v := .resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) }}
{{- end }}
- {name: OTEL_RESOURCE_ATTRIBUTES, value: {{ join "," $attrs | quote }}}
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The egress rule to the OTLP collector (2 columns in), for the policies
of the pods that may trace, when tracing.otlpEndpoint is set. */}}
{{- define "hc.toCollector" -}}
{{- if .Values.tracing.otlpEndpoint }}
{{- include "hc.collectorRule" . | trim | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "hc.collectorRule" -}}
{{- with .Values.tracing.collector -}}
# The OTLP collector (tracing.collector).
- to:
  {{- if .cidrs }}
  {{- range .cidrs }}
  - ipBlock: {cidr: {{ . }}}
  {{- end }}
  {{- else }}
  - namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: {{ required "tracing.collector.namespace: the collector's namespace (or tracing.collector.cidrs)" .namespace }}}
    {{- with .podLabels }}
    podSelector:
      matchLabels: {{ toJson . }}
    {{- end }}
  {{- end }}
  ports: [{port: {{ .port }}, protocol: TCP}]
{{- end }}
{{- end -}}
