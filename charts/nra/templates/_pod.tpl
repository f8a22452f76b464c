{{/* What every pod of the chart shares: the node, the host network, the lockdown. */}}
{{- define "nra.podCommon" -}}
hostNetwork: true
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
nodeSelector:
  {{- toYaml (merge (dict) (.Values.nodeSelector | default dict) (dict "kubernetes.io/os" "linux")) | nindent 2 }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- include "nra.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/* The env of a container running the agent: NODE_NAME and HOST_IP from the downward
     API, then the settings, then extraEnv (which wins over a setting of the same name).
     .root: the chart context; .set: settings this pod sets itself (name -> value). */}}
{{- define "nra.agentEnv" -}}
{{- $root := .root -}}
{{- $env := merge (dict) (.set | default dict) ($root.Values.env | default dict) -}}
{{- $skip := list -}}
{{- range $root.Values.extraEnv }}{{ $skip = append $skip .name }}{{ end -}}
{{- if kindIs "invalid" $env.NODE_NAME }}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- include "nra.settingsEnv" (dict "env" $env "skip" $skip) }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Refuse settings that would turn the resident agent into something else. */}}
{{- define "nra.checkValues" -}}
{{- range $name := list "ONESHOT" "CLEANANDEXIT" }}
{{- $value := index $.Values.env $name | default "" | toString | lower }}
{{- if has $value (list "1" "true" "yes" "on") }}
{{- fail (printf "env.%s would make every pod of the DaemonSet exit: use %s.enabled instead" $name (ternary "oneshot" "cleanup" (eq $name "ONESHOT"))) }}
{{- end }}
{{- end }}
{{- if and .Values.cleanup.enabled .Values.daemonset.enabled }}
{{- fail "cleanup.enabled needs daemonset.enabled=false: the running agent would put back what the cleanup removes" }}
{{- end }}
{{- if and (include "nra.setting" (dict "root" . "name" "FRRK8S_NAMESPACE")) (not (has (lower (include "nra.setting" (dict "root" . "name" "METALLB_USE_CRDS"))) (list "1" "true" "yes" "on"))) }}
{{- fail "env.FRRK8S_NAMESPACE needs env.METALLB_USE_CRDS=1: BGPSessionStates are read in CRD mode only (nra refuses to start otherwise)" }}
{{- end }}
{{- with include "nra.securePort" . }}
{{- if not (include "nra.healthPort" $) }}
{{- fail "prometheus.secureMetricsPort needs the health listener: HEALTH_ADDRESS is off (nra refuses METRICS_ADDRESS without it)" }}
{{- end }}
{{- if eq . (include "nra.healthPort" $) }}
{{- fail "prometheus.secureMetricsPort must differ from HEALTH_ADDRESS's port: both listen on the node's address" }}
{{- end }}
{{- if include "nra.setting" (dict "root" $ "name" "METRICS_ADDRESS") }}
{{- fail "env.METRICS_ADDRESS and prometheus.secureMetricsPort both set: leave METRICS_ADDRESS to the chart" }}
{{- end }}
{{- end }}
{{- if and .Values.prometheus.metricsTLSSecret (not (include "nra.securePort" .)) }}
{{- fail "prometheus.metricsTLSSecret needs prometheus.secureMetricsPort (the HTTPS listener it is for)" }}
{{- end }}
{{- if and .Values.oneshot.enabled (not .Values.oneshot.nodes) }}
{{- fail "oneshot.enabled needs oneshot.nodes: a CronJob's pod reconciles the one node it runs on" }}
{{- end }}
{{- end -}}

{{- define "nra.hooksVolumes" -}}
- name: hooks
  configMap:
    name: {{ include "nra.fullname" . }}-hooks
    defaultMode: 0555
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- include "nra.tableNameVolume" . }}
{{- end -}}

{{/* TABLE_NAME: nra names its table in the node's iproute2 rt_tables.d (nra.conf). */}}
{{- define "nra.tableNameVolume" -}}
{{- if index .Values.env "TABLE_NAME" }}
- name: rt-tables
  hostPath:
    path: /etc/iproute2/rt_tables.d
    type: DirectoryOrCreate
{{- end }}
{{- end -}}

{{- define "nra.tableNameMount" -}}
{{- if index .Values.env "TABLE_NAME" }}
- name: rt-tables
  mountPath: /etc/iproute2/rt_tables.d
{{- end }}
{{- end -}}

{{- define "nra.hooksMounts" -}}
- name: hooks
  mountPath: /etc/nra/hooks
  readOnly: true
{{- if .Values.configMapData }}
# The Node.js chart mounted its configMapData here.
- name: hooks
  mountPath: /tmp/config
  readOnly: true
{{- end }}
# Hook scripts may want a scratch directory; the root filesystem is read-only.
- name: tmp
  mountPath: /tmp
{{- include "nra.tableNameMount" . }}
{{- end -}}
