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

{{- /* kube-scheduler's configuration: scheduler.config when set; else the overlay's file, verbatim with
scheduler.scoring "extender" (the extender's prioritize verb scores EPC), or with "in-tree" that verb removed and
NodeResourcesFit scoring EPC in every profile (the strategy of the configuration key scoringStrategy, over cpu,
memory and EPC weighted 3; docs/extender.md "Scoring without the prioritize verb"). */ -}}
{{- define "cp.schedulerConfig" -}}
{{- $scoring := .Values.scheduler.scoring | default "extender" -}}
{{- if .Values.scheduler.config -}}
{{- if ne $scoring "extender" -}}
{{- fail (printf "scheduler.scoring %q applies to the overlay's configuration: with scheduler.config set, write the scoring into it (docs/extender.md)" $scoring) -}}
{{- end -}}
{{- .Values.scheduler.config -}}
{{- else -}}
{{- $file := include "cp.overlayFile" (dict "root" . "file" "scheduler-config.yaml") -}}
{{- if eq $scoring "extender" -}}
{{- $file -}}
{{- else if eq $scoring "in-tree" -}}
{{- $config := fromYaml $file -}}
{{- $resource := (index (index $config.extenders 0).managedResources 0).name -}}
{{- $strategy := (fromYaml (include "cp.config" .)).scoringStrategy | default "LeastAllocated" -}}
{{- $weights := list (dict "name" "cpu" "weight" 1) (dict "name" "memory" "weight" 1) (dict "name" $resource "weight" 3) -}}
{{- range $config.extenders -}}{{- $_ := unset . "prioritizeVerb" -}}{{- end -}}
{{- range $profile := $config.profiles -}}
{{- $scoringStrategy := dict "type" $strategy "resources" (deepCopy $weights) -}}
{{- $fits := list -}}
{{- range ($profile.pluginConfig | default list) -}}{{- if eq .name "NodeResourcesFit" -}}{{- $fits = append $fits . -}}{{- end -}}{{- end -}}
{{- if $fits -}}
{{- $fit := first $fits -}}
{{- $args := $fit.args | default dict -}}
{{- $_ := set $args "scoringStrategy" $scoringStrategy -}}
{{- $_ := set $fit "args" $args -}}
{{- else -}}
{{- $fit := dict "name" "NodeResourcesFit" "args" (dict "scoringStrategy" $scoringStrategy) -}}
{{- $_ := set $profile "pluginConfig" (append ($profile.pluginConfig | default list) $fit) -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- else -}}
{{- fail (printf "scheduler.scoring %q: must be extender (the prioritize verb) or in-tree (NodeResourcesFit scores EPC; docs/extender.md)" $scoring) -}}
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
