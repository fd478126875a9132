{{- /* Labels every object carries (kustomize's base adds the version the same way). */ -}}
{{- define "cp.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- /* The overlay's file, checked: one of the overlays of manifests/. */ -}}
{{- define "cp.overlayFile" -}}
{{- $overlay := .root.Values.overlay -}}
{{- if not (has $overlay (list "alibaba" "azure" "intel" "base")) -}}
{{- fail (printf "overlay %q: must be one of alibaba, azure, intel, base (the overlays of manifests/)" $overlay) -}}
{{- end -}}
{{- .root.Files.Get (printf "files/%s/%s" $overlay .file) -}}
{{- end -}}

{{- /* config.yaml: the overlay's file (verbatim when nothing is set), with the alibaba PCCS region filled
in, routeEPCPods and the `config` values merged over it. */ -}}
{{- define "cp.config" -}}
{{- $file := include "cp.overlayFile" (dict "root" . "file" "config.yaml") -}}
{{- if contains "<region>" $file -}}
{{- $region := required "region: the ACK region of the PCCS (e.g. cn-hangzhou); the alibaba overlay's dcap.pccsUrl is per region (docs/attestation.md)" .Values.region -}}
{{- if not (regexMatch "^[a-z]{2}(-[a-z0-9]+)+$" $region) -}}
{{- fail (printf "region %q: not an Alibaba Cloud region id such as cn-hangzhou" $region) -}}
{{- end -}}
{{- $file = replace "<region>" $region $file -}}
{{- end -}}
{{- if or .Values.config .Values.routeEPCPods -}}
{{- $merged := mustMergeOverwrite (fromYaml $file) (deepCopy (.Values.config | default dict)) -}}
{{- if .Values.routeEPCPods -}}{{- $_ := set $merged "routeEPCPods" true -}}{{- end -}}
{{- toYaml $merged -}}
{{- else -}}
{{- $file -}}
{{- end -}}
{{- end -}}

{{- /* kube-scheduler's configuration: scheduler.config when set (its mode is what it configures); else the
overlay's file for scheduler.mode: `native` (files/<overlay>/scheduler-config.yaml, verbatim, with NodeResourcesFit's
scoring type set to the configuration key scoringStrategy when that is not LeastAllocated) or `ledger`
(files/<overlay>/scheduler-config-ledger.yaml, as manifests/components/ledger-mode; docs/extender.md "Modes"). */ -}}
{{- define "cp.schedulerConfig" -}}
{{- $mode := .Values.scheduler.mode | default "native" -}}
{{- if not (has $mode (list "native" "ledger")) -}}
{{- fail (printf "scheduler.mode %q: must be native (kube-scheduler counts and binds EPC pods) or ledger (the extender scores and binds; docs/extender.md \"Modes\")" $mode) -}}
{{- end -}}
{{- if .Values.scheduler.config -}}
{{- .Values.scheduler.config -}}
{{- else if eq $mode "ledger" -}}
{{- include "cp.overlayFile" (dict "root" . "file" "scheduler-config-ledger.yaml") -}}
{{- else -}}
{{- $file := include "cp.overlayFile" (dict "root" . "file" "scheduler-config.yaml") -}}
{{- $strategy := (fromYaml (include "cp.config" .)).scoringStrategy | default "LeastAllocated" -}}
{{- if eq $strategy "LeastAllocated" -}}
{{- $file -}}
{{- else -}}
{{- $config := fromYaml $file -}}
{{- range $profile := $config.profiles -}}
{{- range ($profile.pluginConfig | default list) -}}
{{- if eq .name "NodeResourcesFit" -}}{{- $_ := set .args.scoringStrategy "type" $strategy -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cp.configName" -}}
confidential-pods-config-{{ include "cp.config" . | sha256sum | trunc 10 }}
{{- end -}}

{{- define "cp.schedulerConfigName" -}}
confidential-scheduler-config-{{ include "cp.schedulerConfig" . | sha256sum | trunc 10 }}
{{- end -}}

{{- define "cp.aesmdConfigName" -}}
confidential-pods-aesmd-config-{{ include "cp.config" . | sha256sum | trunc 10 }}
{{- end -}}

{{- /* Components on by default where the overlay includes them: null follows the overlay. */ -}}
{{- define "cp.podSecurityLookup" -}}
{{- if kindIs "invalid" .Values.podSecurityLookup.enabled -}}{{ ne .Values.overlay "base" }}{{- else -}}{{ .Values.podSecurityLookup.enabled }}{{- end -}}
{{- end -}}

{{- define "cp.aesmd" -}}
{{- if kindIs "invalid" .Values.aesmd.enabled -}}{{ eq .Values.overlay "intel" }}{{- else -}}{{ .Values.aesmd.enabled }}{{- end -}}
{{- end -}}

{{- /* The EPC resources the route entry's CEL names (manifests/components/route-epc-pods): every profile's, and
config.epcResource when set to another name. The name is written into CEL, so it must be an extended resource name
(the webhook's own rule, confidential_pods/settings.py), which has no quote to escape. */ -}}
{{- define "cp.routedResources" -}}
{{- $resources := list "alibabacloud.com/sgx_epc_MiB" "kubernetes.azure.com/sgx_epc_mem_in_MiB" "sgx.intel.com/epc" -}}
{{- $configured := (fromYaml (include "cp.config" .)).epcResource -}}
{{- if $configured -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$" (toString $configured)) -}}
{{- fail (printf "config.epcResource %q: not an extended resource name such as sgx.intel.com/epc" (toString $configured)) -}}
{{- end -}}
{{- if not (has $configured $resources) -}}{{- $resources = append $resources $configured -}}{{- end -}}
{{- end -}}
{{- range $i, $resource := $resources -}}{{ if $i }}, {{ end }}'{{ $resource }}'{{- end -}}
{{- end -}}
