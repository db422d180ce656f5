{{- define "memgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "memgate.labels" -}}
app.kubernetes.io/name: memgate-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "memgate.selector" -}}
app.kubernetes.io/name: memgate-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "memgate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "memgate.webhookService" -}}
{{ include "memgate.fullname" . }}-webhook
{{- end -}}

{{- define "memgate.webhookSecret" -}}
{{ include "memgate.fullname" . }}-webhook-tls
{{- end -}}
