{{/* Names: "nra" for a release called nra (or containing it), else "<release>-nra". */}}
{{- define "nra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nra.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; the selector labels are the stable subset. */}}
{{- define "nra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "nra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: metallb
{{- end -}}

{{- define "nra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* MetalLB's namespace: where nra reads its configuration, hence where the Role lives. */}}
{{- define "nra.metallbNamespace" -}}
{{- .Values.env.METALLB_NAMESPACE | default .Release.Namespace -}}
{{- end -}}

{{/* rbac.enabled (the Node.js chart's name) wins over rbac.create when it is set. */}}
{{- define "nra.rbacCreate" -}}
{{- if kindIs "bool" .Values.rbac.enabled -}}{{ .Values.rbac.enabled }}{{- else -}}{{ .Values.rbac.create }}{{- end -}}
{{- end -}}

{{- define "nra.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nra.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* registry/repository[:tag][@digest], the registry global.imageRegistry if set, else
     image.registry; a repository that already names a registry
     (docker.io/x/y, localhost:5000/y, as in the Node.js chart's values) is used as is. */}}
{{- define "nra.image" -}}
{{- $repo := .Values.image.repository -}}
{{- $first := regexFind "^[^/]+" $repo -}}
{{- $registry := (.Values.global | default dict).imageRegistry | default .Values.image.registry -}}
{{- if and $registry (not (and (contains "/" $repo) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")))) -}}
{{- $repo = printf "%s/%s" $registry $repo -}}
{{- end -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" $repo $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The health listener's port, from HEALTH_ADDRESS (host:port); "" when it is off. */}}
{{- define "nra.healthPort" -}}
{{- $address := .Values.env.HEALTH_ADDRESS | default "" | toString | trim -}}
{{- if not (has (lower $address) (list "" "off" "0" "false" "no")) -}}
{{- splitList ":" $address | last -}}
{{- end -}}
{{- end -}}

{{/* The hook scripts: `hooks` plus the Node.js chart's `configMapData`. */}}
{{- define "nra.hookFiles" -}}
{{- toYaml (merge (dict) (.Values.hooks | default dict) (.Values.configMapData | default dict)) -}}
{{- end -}}

{{/* Settings as container env entries: every non-null key of `env` except those a
     pod template sets itself (passed in "skip"), values as strings. */}}
{{- define "nra.settingsEnv" -}}
{{- $skip := .skip -}}
{{- range $name, $value := .env }}
{{- if and (not (kindIs "invalid" $value)) (not (has $name $skip)) }}
{{- $text := toString $value }}
{{- if and (kindIs "float64" $value) (eq ($value | int64 | float64) $value) }}
{{- /* whole numbers from a values file come as float64: print 4294967295, not 4.294967295e+09 */}}
{{- $text = $value | int64 | toString }}
{{- end }}
- name: {{ $name }}
  value: {{ $text | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The container securityContext: root with NET_ADMIN only (see docs/install.md), merged
     with the user's securityContext. */}}
{{- define "nra.securityContext" -}}
{{- toYaml (mergeOverwrite (dict "runAsUser" 0 "runAsNonRoot" false "allowPrivilegeEscalation" false "privileged" false "readOnlyRootFilesystem" true "capabilities" (dict "drop" (list "ALL") "add" (list "NET_ADMIN"))) (deepCopy (.Values.securityContext | default dict))) -}}
{{- end -}}

{{- define "nra.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (dict "seccompProfile" (dict "type" "RuntimeDefault")) (deepCopy (.Values.podSecurityContext | default dict))) -}}
{{- end -}}

{{/* Monitors: the node's name as a `node` label (the pods use the node's address). */}}
{{- define "nra.nodeRelabeling" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
  action: replace
{{- end -}}

{{/* A setting as the agent gets it (.name, .root): extraEnv's entry wins over env's;
     "" when unset. */}}
{{- define "nra.setting" -}}
{{- $name := .name -}}
{{- $value := index .root.Values.env $name -}}
{{- range .root.Values.extraEnv }}{{ if eq .name $name }}{{ $value = .value }}{{ end }}{{ end -}}
{{- if not (kindIs "invalid" $value) }}{{ toString $value | trim }}{{ end -}}
{{- end -}}

{{/* FRR-K8s's namespace when the resident agent watches its BGPSessionStates, else "". */}}
{{- define "nra.frrk8sNamespace" -}}
{{- if .Values.daemonset.enabled }}{{ include "nra.setting" (dict "root" . "name" "FRRK8S_NAMESPACE") }}{{ end -}}
{{- end -}}

{{/* prometheus.secureMetricsPort: nra's HTTPS /metrics port; "" when /metrics is plain HTTP. */}}
{{- define "nra.securePort" -}}
{{- with .Values.prometheus.secureMetricsPort }}{{ . | int64 }}{{ end -}}
{{- end -}}

{{/* What the chart sets for the HTTPS /metrics listener (a dict for nra.agentEnv's "set"). */}}
{{- define "nra.secureMetricsEnv" -}}
{{- $set := dict -}}
{{- with include "nra.securePort" . -}}
{{- $_ := set $set "METRICS_ADDRESS" (printf "$(HOST_IP):%s" .) -}}
{{- if $.Values.prometheus.metricsTLSSecret -}}
{{- $_ := set $set "METRICS_TLS_CERT_FILE" "/etc/nra/metrics-tls/tls.crt" -}}
{{- $_ := set $set "METRICS_TLS_KEY_FILE" "/etc/nra/metrics-tls/tls.key" -}}
{{- end -}}
{{- end -}}
{{- toYaml $set -}}
{{- end -}}

{{/* Whether nra asks the API server who may scrape (METRICS_AUTH is not none): "true" or "". */}}
{{- define "nra.metricsAuth" -}}
{{- if and (include "nra.securePort" .) (ne (lower (include "nra.setting" (dict "root" . "name" "METRICS_AUTH"))) "none") }}true{{ end -}}
{{- end -}}

{{/* The scrape settings of a monitor's endpoint when nra serves /metrics over HTTPS
     (.root; .monitor: the serviceMonitor or podMonitor values; .tokenFile: whether the
     monitor kind takes Prometheus' own token file). */}}
{{- define "nra.secureEndpoint" -}}
{{- $p := .root.Values.prometheus -}}
scheme: https
{{- with .monitor.tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if not (include "nra.metricsAuth" .root) }}
{{- else if $p.bearerTokenSecret.name }}
authorization:
  type: Bearer
  credentials:
    name: {{ $p.bearerTokenSecret.name }}
    key: {{ $p.bearerTokenSecret.key | default "token" }}
{{- else if .tokenFile }}
# Prometheus' own service account token (bind it with prometheus.scrapers)
bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
{{- else }}
{{- fail "prometheus.podMonitor with prometheus.secureMetricsPort needs prometheus.bearerTokenSecret (a PodMonitor cannot send Prometheus' own token file)" }}
{{- end }}
{{- end -}}
