{{/* Names and labels. */}}
{{- define "socket-bridge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "socket-bridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "socket-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "socket-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "socket-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "socket-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "socket-bridge.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "socket-bridge.fullname" .)) -}}
{{- end -}}

{{/* The first JWT algorithm decides the key kind: HS* take a shared secret, the others a
public key file. */}}
{{- define "socket-bridge.jwtUsesSecret" -}}
{{- $algs := dig "auth" "jwt" "algorithms" (list "HS256") .Values.config -}}
{{- if hasPrefix "HS" (first $algs) }}true{{ end -}}
{{- end -}}

{{- define "socket-bridge.jwtMode" -}}
{{- eq (dig "auth" "mode" "dev" .Values.config) "jwt" | ternary "true" "" -}}
{{- end -}}

{{- define "socket-bridge.publicKeyDir" -}}/run/secrets/socket-bridge{{- end -}}

{{/* The effective settings as JSON: .Values.config, plus socketio.max_connections from
sizing and the JWT public key file when one is mounted. */}}
{{- define "socket-bridge.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $sio := get $config "socketio" | default dict -}}
{{- if not (hasKey $sio "max_connections") -}}
{{- $_ := set $sio "max_connections" (int64 .Values.sizing.maxConnectionsPerPod) -}}
{{- end -}}
{{- $_ := set $config "socketio" $sio -}}
{{- if and (include "socket-bridge.jwtMode" .) (not (include "socket-bridge.jwtUsesSecret" .)) -}}
{{- $auth := get $config "auth" -}}
{{- $jwt := get $auth "jwt" | default dict -}}
{{- $_ := set $jwt "public_key_file" (printf "%s/jwt-public-key.pem" (include "socket-bridge.publicKeyDir" .)) -}}
{{- $_ := set $auth "jwt" $jwt -}}
{{- end -}}
{{- toJson $config -}}
{{- end -}}

{{/* Renders a settings map as TOML. Helm reads YAML numbers as floats; whole numbers are
written as integers, since the bridge's integer settings refuse 10000.0. */}}
{{- define "socket-bridge.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- printf "%t" . -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) -}}
{{- printf "%d" . -}}
{{- else if kindIs "float64" . -}}
{{- if eq . (floor .) }}{{ printf "%d" (int64 .) }}{{ else }}{{ printf "%v" . }}{{ end -}}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . }}{{ $items = append $items (include "socket-bridge.tomlValue" .) }}{{ end -}}
[{{ join ", " $items }}]
{{- else -}}
{{- fail (printf "config: %v has no TOML form (null or an unsupported type)" .) -}}
{{- end -}}
{{- end -}}

{{- define "socket-bridge.tomlTable" -}}
{{- $table := .table -}}
{{- $prefix := .prefix -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "socket-bridge.tomlValue" $value }}
{{- end -}}
{{- end -}}
{{- range $key := keys $table | sortAlpha -}}
{{- $value := get $table $key -}}
{{- if kindIs "map" $value -}}
{{- $name := ternary $key (printf "%s.%s" $prefix $key) (eq $prefix "") }}

[{{ $name }}]
{{- include "socket-bridge.tomlTable" (dict "table" $value "prefix" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Requests and limits: explicit .Values.resources, or computed from the measured memory
per connection (see sizing in values.yaml). */}}
{{- define "socket-bridge.resources" -}}
{{- if .Values.resources -}}
{{- toYaml .Values.resources -}}
{{- else -}}
{{- $s := .Values.sizing -}}
{{- $config := include "socket-bridge.config" . | fromJson -}}
{{- $max := dig "socketio" "max_connections" $s.maxConnectionsPerPod $config | float64 -}}
{{- $perConnMiB := divf $s.memoryPerConnectionKiB 1024.0 -}}
{{- $request := addf $s.baseMemoryMiB (mulf $s.expectedConnectionsPerPod $perConnMiB) | ceil | int64 -}}
{{- $limit := mulf (addf $s.baseMemoryMiB (mulf $max $perConnMiB)) 1.25 | ceil | int64 -}}
requests:
  cpu: {{ $s.cpuRequest | quote }}
  memory: {{ printf "%dMi" $request }}
limits:
  memory: {{ printf "%dMi" $limit }}
{{- end -}}
{{- end -}}

{{/* Refuses values that would deploy something unsafe or broken, naming the value. */}}
{{- define "socket-bridge.validate" -}}
{{- $c := .Values.config -}}
{{- range $path := list "grpc.api_keys" "auth.jwt.secret" "dashboard.password" "redis.url" -}}
{{- $parts := splitList "." $path -}}
{{- $found := $c -}}
{{- range $parts -}}{{- if kindIs "map" $found -}}{{- $found = get $found . -}}{{- else -}}{{- $found = "" -}}{{- end -}}{{- end -}}
{{- if $found -}}
{{- fail (printf "config.%s is a secret: remove it from config and set it through `secrets` (or redis.url), which go into a Secret" $path) -}}
{{- end -}}
{{- end -}}
{{- if ne (dig "auth" "mode" "dev" $c) "jwt" -}}
{{- fail "config.auth.mode must be jwt: pods listen on the cluster network, where dev auth would let anyone claim any user id" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.redis.enabled) -}}
{{- fail "replicaCount > 1 needs redis.enabled: without Redis each pod reaches only its own sockets" -}}
{{- end -}}
{{- if not .Values.secrets.existingSecret -}}
{{- if not .Values.secrets.apiKeys -}}
{{- fail "set secrets.apiKeys (one or more keys of 16+ characters) or secrets.existingSecret" -}}
{{- end -}}
{{- if and (include "socket-bridge.jwtUsesSecret" .) (not .Values.secrets.jwtSecret) -}}
{{- fail "set secrets.jwtSecret (32+ bytes) for HS* JWTs, or secrets.existingSecret" -}}
{{- end -}}
{{- if and (not (include "socket-bridge.jwtUsesSecret" .)) (not .Values.secrets.jwtPublicKey) -}}
{{- fail "set secrets.jwtPublicKey (PEM) for the configured JWT algorithm, or secrets.existingSecret" -}}
{{- end -}}
{{- if and .Values.redis.enabled (not .Values.redis.url) -}}
{{- fail "redis.enabled needs redis.url, or secrets.existingSecret with key redis-url" -}}
{{- end -}}
{{- end -}}
{{- end -}}
