{{/* Names, labels and the values every template shares. */}}

{{- define "library.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or just the release name when it already holds the chart's name. */}}
{{- define "library.fullname" -}}
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

{{/* The three gRPC services, in the order the templates render them. */}}
{{- define "library.services" -}}
{{- list "catalog" "lending" "mypage" | toJson -}}
{{- end -}}

{{/* <fullname>-<component>; call with (dict "root" $ "component" "catalog"). */}}
{{- define "library.componentName" -}}
{{- printf "%s-%s" (include "library.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "library.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component; never change once released (selectors are immutable). */}}
{{- define "library.selectorLabels" -}}
app.kubernetes.io/name: {{ include "library.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component; app and version are the labels Istio's telemetry reads. */}}
{{- define "library.labels" -}}
{{ include "library.selectorLabels" . }}
app.kubernetes.io/part-of: library
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "library.chart" .root }}
app: {{ .component }}
version: {{ .root.Chart.AppVersion | quote }}
{{- end -}}

{{/* Image reference of a service; call with (dict "root" $ "component" "catalog"). */}}
{{- define "library.image" -}}
{{- $values := index .root.Values .component -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) $values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* In-chart NATS servers: 1, nats.cluster.replicas with the cluster, 0 with an external NATS. */}}
{{- define "library.natsNodes" -}}
{{- if not .Values.nats.enabled -}}
0
{{- else if .Values.nats.cluster.enabled -}}
{{- int .Values.nats.cluster.replicas -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/*
The cluster's client Service (ClusterIP over the ready servers). The headless
<fullname>-nats stays the StatefulSet's governing Service: pod DNS names for the routes.
*/}}
{{- define "library.natsClientService" -}}
{{- printf "%s-client" (include "library.componentName" (dict "root" . "component" "nats")) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
NATS_URL. One URL: libshared hands NATS_URL to natsOptions_SetURL, which in NATS.c 3.4 takes
a single URL (a comma-separated list is only split by natsConnection_ConnectTo). With the
cluster, the client Service; the server's INFO then gives the client every server's
address (connect_urls), which it reconnects to when its server goes.
*/}}
{{- define "library.natsUrl" -}}
{{- if and .Values.nats.enabled .Values.nats.cluster.enabled -}}
{{- printf "nats://%s:4222" (include "library.natsClientService" .) -}}
{{- else if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "library.componentName" (dict "root" . "component" "nats")) -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/*
NATS_REPLICAS: config.natsReplicas, or with 0 the chart's choice (3 on the in-chart cluster,
else 1). More than the in-chart servers is refused here rather than by the services at start.
*/}}
{{- define "library.natsReplicas" -}}
{{- $wanted := int .Values.config.natsReplicas -}}
{{- $nodes := include "library.natsNodes" . | int -}}
{{- if eq $wanted 0 -}}
{{- if gt $nodes 1 }}3{{ else }}1{{ end -}}
{{- else if and (gt $nodes 0) (gt $wanted $nodes) -}}
{{- fail (printf "config.natsReplicas (%d) is more than the in-chart NATS servers (%d): JetStream cannot place more replicas of a stream than there are servers; lower it (0 lets the chart choose) or run nats.cluster with enough nats.cluster.replicas" $wanted $nodes) -}}
{{- else -}}
{{- $wanted -}}
{{- end -}}
{{- end -}}

{{- define "library.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:6379" (include "library.componentName" (dict "root" . "component" "redis")) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "library.catalogAddress" -}}
{{- printf "%s:%d" (include "library.componentName" (dict "root" . "component" "catalog")) (int .Values.catalog.ports.grpc) -}}
{{- end -}}

{{- define "library.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "library.fullname" .)) .Values.jwt.existingSecret -}}
{{- end -}}

{{- define "library.credentialsSecretName" -}}
{{- default (printf "%s-credentials" (include "library.fullname" .)) .Values.credentials.existingSecret -}}
{{- end -}}

{{/* An env entry from the credentials Secret: (dict "root" $ "name" "NATS_PASSWORD" "key" "nats-catalog"). */}}
{{- define "library.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "library.credentialsSecretName" .root }}
      key: {{ .key }}
{{- end -}}

{{/* A service's logins: its NATS user, and mypage's Redis ACL user. */}}
{{- define "library.credentialsEnv" -}}
{{- $root := .root -}}
{{- if $root.Values.nats.auth }}
- name: NATS_USER
  value: {{ .component | quote }}
{{ include "library.secretEnv" (dict "root" $root "name" "NATS_PASSWORD" "key" (printf "nats-%s" .component)) }}
{{- end }}
{{- if and $root.Values.redis.auth (eq .component "mypage") }}
- name: REDIS_USER
  value: mypage
{{ include "library.secretEnv" (dict "root" $root "name" "REDIS_PASSWORD" "key" "redis-mypage") }}
{{- end }}
{{- end -}}

{{/* The gRPC service name each component serves (its health name and route prefix). */}}
{{- define "library.grpcService" -}}
{{- $names := dict "catalog" "library.catalog.v1.CatalogService" "lending" "library.lending.v1.LendingService" "mypage" "library.mypage.v1.MypageService" -}}
{{- index $names . -}}
{{- end -}}

{{/*
The shared ConfigMap's data. LOG_LEVEL is left out of the pods' checksum: it is re-read
from the mounted file, so changing it needs no restart.
*/}}
{{- define "library.configData" -}}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
LOAN_PERIOD: {{ .Values.config.loanPeriod | quote }}
MAX_ACTIVE_LOANS: {{ .Values.config.maxActiveLoans | toString | quote }}
MAX_RENEWALS: {{ .Values.config.maxRenewals | toString | quote }}
MAX_HOLDS: {{ .Values.config.maxHolds | toString | quote }}
HOLD_PICKUP: {{ .Values.config.holdPickup | quote }}
FINE_PER_INTERVAL: {{ .Values.config.finePerInterval | toString | quote }}
FINE_INTERVAL: {{ .Values.config.fineInterval | quote }}
FINE_MAX_PER_LOAN: {{ .Values.config.fineMaxPerLoan | toString | quote }}
FINE_BLOCK_AT: {{ .Values.config.fineBlockAt | toString | quote }}
RETENTION: {{ .Values.config.retention | quote }}
JWT_ISSUER: {{ .Values.config.jwtIssuer | quote }}
JWT_AUDIENCE: {{ .Values.config.jwtAudience | quote }}
NATS_URL: {{ include "library.natsUrl" . | quote }}
NATS_REPLICAS: {{ include "library.natsReplicas" . | quote }}
DRAIN_GRACE: {{ .Values.config.drainGrace | quote }}
CATALOG_ADDR: {{ include "library.catalogAddress" . | quote }}
REDIS_URL: {{ include "library.redisUrl" . | quote }}
{{- end -}}

{{/*
The settings each service reads from the shared ConfigMap (names as in the binaries'
config tables; tools/check-deploy checks them against the sources).
*/}}
{{- define "library.configKeys" -}}
{{- $common := list "LOG_LEVEL" "JWT_ISSUER" "JWT_AUDIENCE" "NATS_URL" "NATS_REPLICAS" "DRAIN_GRACE" -}}
{{- $extra := dict "catalog" (list "HOLD_PICKUP") "lending" (list "LOAN_PERIOD" "MAX_ACTIVE_LOANS" "MAX_RENEWALS" "MAX_HOLDS" "FINE_PER_INTERVAL" "FINE_INTERVAL" "FINE_MAX_PER_LOAN" "FINE_BLOCK_AT" "RETENTION" "CATALOG_ADDR") "mypage" (list "REDIS_URL" "RETENTION") -}}
{{- concat $common (index $extra .) | toJson -}}
{{- end -}}

{{/* Pod environment of a service container; call with (dict "root" $ "component" "catalog"). */}}
{{- define "library.env" -}}
{{- $root := .root -}}
{{- $values := index $root.Values .component -}}
{{- $config := printf "%s-config" (include "library.fullname" $root) -}}
- name: GRPC_PORT
  value: {{ $values.ports.grpc | toString | quote }}
- name: METRICS_PORT
  value: {{ $values.ports.metrics | toString | quote }}
- name: JWT_PUBLIC_KEY_FILE
  value: {{ if $root.Values.jwt.keySet }}/etc/library/jwt{{ else }}/etc/library/jwt/{{ $root.Values.jwt.secretKey }}{{ end }}
- name: LOG_LEVEL_FILE
  value: /etc/library/config/LOG_LEVEL
{{- if $root.Values.nats.tls.existingSecret }}
- name: NATS_TLS_CA_FILE
  value: /etc/library/nats-tls/ca.crt
{{- end }}
{{- if eq .component "lending" }}
- name: POLICY_FILE
  value: /etc/library/policy/policy.json
{{- end }}
{{- range include "library.configKeys" .component | fromJsonArray }}
- name: {{ . }}
  valueFrom:
    configMapKeyRef:
      name: {{ $config }}
      key: {{ . }}
{{- end }}
{{- include "library.credentialsEnv" . }}
{{- range $name, $value := $values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Volumes every service pod mounts: the JWT key, the live log level, a writable /tmp. */}}
{{- define "library.volumes" -}}
- name: jwt
  secret:
    secretName: {{ include "library.jwtSecretName" . }}
    {{- if not .Values.jwt.keySet }}
    items:
      - key: {{ .Values.jwt.secretKey }}
        path: {{ .Values.jwt.secretKey }}
    {{- end }}
- name: config
  configMap:
    name: {{ include "library.fullname" . }}-config
    items:
      - key: LOG_LEVEL
        path: LOG_LEVEL
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if .Values.nats.tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ .Values.nats.tls.existingSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "library.volumeMounts" -}}
- name: jwt
  mountPath: /etc/library/jwt
  readOnly: true
- name: config
  mountPath: /etc/library/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/library/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The patron groups' loan policies as lending reads them (POLICY_FILE): {"groups": {...}}.
*/}}
{{- define "library.policyJson" -}}
{{- dict "groups" (.Values.policies | default dict) | toPrettyJson -}}
{{- end -}}

{{/* Pod annotations: config checksum (rolls the pods on a change) and Prometheus scraping. */}}
{{- define "library.podAnnotations" -}}
{{- $root := .root -}}
{{- $values := index $root.Values .component -}}
checksum/config: {{ omit (include "library.configData" $root | fromYaml) "LOG_LEVEL" | toJson | sha256sum }}
{{- if eq .component "lending" }}
checksum/policy: {{ include "library.policyJson" $root | sha256sum }}
{{- end }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $values.ports.metrics | toString | quote }}
prometheus.io/path: /metrics
{{- with $values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The route table (files/routes.tsv, a link to mesh/routes.tsv: the local gateway's table) as
JSON: [{"service": ..., "backend": ..., "port": ...}] in table order.
*/}}
{{- define "library.routes" -}}
{{- $text := .Files.Get "files/routes.tsv" -}}
{{- if not $text -}}
{{- fail "files/routes.tsv (mesh/routes.tsv) is missing or empty" -}}
{{- end -}}
{{- $routes := list -}}
{{- range $line := splitList "\n" $text -}}
{{- $line = trimSuffix "\r" $line -}}
{{- if and (trim $line) (not (hasPrefix "#" $line)) -}}
{{- $columns := splitList "\t" $line -}}
{{- if ne (len $columns) 3 -}}
{{- fail (printf "routes.tsv: want service<TAB>backend<TAB>port, got %q" $line) -}}
{{- end -}}
{{- $routes = append $routes (dict "service" (index $columns 0) "backend" (index $columns 1) "port" (atoi (index $columns 2))) -}}
{{- end -}}
{{- end -}}
{{- toJson $routes -}}
{{- end -}}

{{/* Full DNS name of a component's Service; call with (dict "root" $ "component" "catalog"). */}}
{{- define "library.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "library.componentName" .) .root.Release.Namespace -}}
{{- end -}}

{{/* SPIFFE principal of a component's ServiceAccount. */}}
{{- define "library.principal" -}}
{{- printf "%s/ns/%s/sa/%s" .root.Values.mesh.trustDomain .root.Release.Namespace (include "library.componentName" .) -}}
{{- end -}}

{{/* Paths anyone may call: health and reflection (probes, grpcurl and buf curl listings). */}}
{{- define "library.publicPaths" -}}
{{- list "/grpc.health.v1.Health/*" "/grpc.reflection.v1.ServerReflection/*" "/grpc.reflection.v1alpha.ServerReflection/*" | toJson -}}
{{- end -}}

{{/* JWT rules for RequestAuthentication: the issuer and audience the services check. */}}
{{- define "library.jwtRules" -}}
- issuer: {{ .Values.config.jwtIssuer | quote }}
  audiences:
    - {{ .Values.config.jwtAudience | quote }}
  {{- if .Values.mesh.jwksUri }}
  jwksUri: {{ .Values.mesh.jwksUri | quote }}
  {{- else }}
  jwks: {{ .Values.mesh.jwks | quote }}
  {{- end }}
  # The services verify the token again (and need its subject): pass it on.
  forwardOriginalToken: true
{{- end -}}
