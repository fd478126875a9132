{{- /* Labels every object carries (kustomize's base adds the version the same way). */ -}}
{{- define "cp.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The release namespace, refused where the install cannot work: the webhook never mutates pods of its own
namespace, so a release in `default` would leave that namespace's opted-in pods unconfidential. */ -}}
{{- define "cp.namespace" -}}
{{- if eq .Release.Namespace "default" -}}
{{- fail "release namespace default: the webhook never mutates pods in its own namespace, so opted-in pods in default would not be confidential; install into a namespace of its own: helm install confidential-pods charts/confidential-pods --namespace confidential-pods --create-namespace" -}}
{{- end -}}
{{- .Release.Namespace -}}
{{- end -}}

{{- /* The aesmd DaemonSet's namespace (Pod Security privileged: host paths), next to the release's. */ -}}
{{- define "cp.aesmdNamespace" -}}
{{- $namespace := .Values.aesmd.namespace | default (printf "%s-aesmd" (include "cp.namespace" .)) -}}
{{- if gt (len $namespace) 63 -}}
{{- fail (printf "aesmd.namespace: %q, the release namespace with -aesmd, is longer than a namespace name may be (63 characters); set aesmd.namespace" $namespace) -}}
{{- end -}}
{{- $namespace -}}
{{- end -}}

{{- /* What every pod of the chart may set: .values is the workload's values (webhook, scheduler, certs, aesmd).
Empty values render nothing, so the defaults match the overlays. */ -}}
{{- define "cp.podScheduling" -}}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* kube-scheduler's image: scheduler.image, else the repository at the cluster's version (without a
distribution's suffix such as -eks-1a2b3c or +k3s1: registry.k8s.io tags the upstream releases). */ -}}
{{- define "cp.schedulerImage" -}}
{{- if .Values.scheduler.image -}}
{{- .Values.scheduler.image -}}
{{- else -}}
{{- $version := semver .Capabilities.KubeVersion.Version -}}
{{- printf "%s:v%d.%d.%d" .Values.scheduler.imageRepository $version.Major $version.Minor $version.Patch -}}
{{- end -}}
{{- end -}}

{{- /* The aesmd DaemonSet's image, required while it is on. */ -}}
{{- define "cp.aesmdImage" -}}
{{- $image := required "aesmd.image: the aesmd DaemonSet (on for the intel overlay, or aesmd.enabled=true) needs an aesmd image you trust (docs/attestation.md); set it, or aesmd.enabled=false when the nodes run aesmd themselves" .Values.aesmd.image -}}
{{- if regexMatch "^[^/]*\\.invalid/" $image -}}
{{- fail (printf "aesmd.image %q: a placeholder; set the aesmd image you pushed" $image) -}}
{{- end -}}
{{- $image -}}
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
in (unless config.dcap.pccsUrl replaces the URL that holds it), routeEPCPods and the `config` values merged
over it. */ -}}
{{- define "cp.config" -}}
{{- $file := include "cp.overlayFile" (dict "root" . "file" "config.yaml") -}}
{{- $given := .Values.config | default dict -}}
{{- if and (contains "<region>" $file) (not (dig "dcap" "pccsUrl" "" $given)) -}}
{{- $region := required "region: the ACK region of the PCCS (e.g. cn-hangzhou); the alibaba overlay's dcap.pccsUrl is per region (docs/attestation.md)" .Values.region -}}
{{- if not (regexMatch "^[a-z]{2}(-[a-z0-9]+)+$" $region) -}}
{{- fail (printf "region %q: not an Alibaba Cloud region id such as cn-hangzhou" $region) -}}
{{- end -}}
{{- $file = replace "<region>" $region $file -}}
{{- end -}}
{{- $namespace := include "cp.namespace" . -}}
{{- if and (hasKey $given "ownNamespace") (ne (toString $given.ownNamespace) $namespace) -}}
{{- fail (printf "config.ownNamespace %q: the webhook's own namespace is the release namespace %q; leave it unset (the chart sets it)" (toString $given.ownNamespace) $namespace) -}}
{{- end -}}
{{- $file = regexReplaceAll "(?m)^ownNamespace: .*$" $file (printf "ownNamespace: %s" $namespace) -}}
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
{{- regexReplaceAll "(?m)^  resourceNamespace: .*$" (include "cp.overlayFile" (dict "root" . "file" "scheduler-config-ledger.yaml")) (printf "  resourceNamespace: %s" (include "cp.namespace" .)) -}}
{{- else -}}
{{- $file := regexReplaceAll "(?m)^  resourceNamespace: .*$" (include "cp.overlayFile" (dict "root" . "file" "scheduler-config.yaml")) (printf "  resourceNamespace: %s" (include "cp.namespace" .)) -}}
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

{{- /* What must be set for the chosen overlay and configuration, checked before anything is applied (the
webhook would start unready, naming the key: confidential_pods/settings.py problems(); operate/precheck.py names
the same for kustomize builds). */ -}}
{{- define "cp.checks" -}}
{{- $config := fromYaml (include "cp.config" .) -}}
{{- $quote := $config.quote | default "aesmd" -}}
{{- $runtimeClass := toString ($config.runtimeClass | default "none") -}}
{{- $dcap := $config.dcap | default dict -}}
{{- if and (eq $quote "aesmd") (not $config.aesmSidecarImage) -}}
{{- if ne $runtimeClass "none" -}}
{{- fail (printf "config.aesmSidecarImage: runtimeClass %s runs opted-in pods in a VM sandbox, which the host's AESM socket does not reach, and quote is aesmd: every opted-in pod needs an aesmd sidecar, whose image this key names (docs/attestation.md); set it (--set config.aesmSidecarImage=<registry>/<aesmd>:<tag>), or config.runtimeClass=none" $runtimeClass) -}}
{{- else if eq (toString $config.aesm) "sidecar" -}}
{{- fail "config.aesmSidecarImage: aesm is sidecar and quote is aesmd: every opted-in pod gets an aesmd sidecar, whose image this key names (docs/attestation.md); set it, or config.aesm=host" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $quote "in-process") (not $dcap.pccsUrl) -}}
{{- fail "config.dcap.pccsUrl: quote is in-process: every enclave container quotes with the PCCS this key names; set the PCCS of your cluster (docs/attestation.md), or config.quote=aesmd" -}}
{{- end -}}
{{- if and (eq (include "cp.nodeProbe" .) "true") (not $dcap.pccsUrl) -}}
{{- fail "config.dcap.pccsUrl: the node probe renders sgx_default_qcnl.conf from it (confidential-pods qcnl) and checks that PCCS; its init container fails while it is unset: set your PCCS (docs/attestation.md), or nodeProbe.enabled=false" -}}
{{- end -}}
{{- if eq (include "cp.aesmd" .) "true" -}}
{{- $_ := include "cp.aesmdImage" . -}}
{{- if not $dcap.pccsUrl -}}
{{- fail "config.dcap.pccsUrl: the aesmd DaemonSet renders sgx_default_qcnl.conf from it (confidential-pods qcnl) and fails while it is unset; set your PCCS (docs/attestation.md), or aesmd.enabled=false" -}}
{{- end -}}
{{- end -}}
{{- /* kube-scheduler defaults an unset lease to kube-system/kube-scheduler, which the chart's Role does not
grant: such a scheduler would never lead. */ -}}
{{- if .Values.scheduler.config -}}
{{- $given := fromYaml .Values.scheduler.config -}}
{{- if hasKey $given "Error" -}}
{{- fail (printf "scheduler.config: not a YAML mapping: %s" $given.Error) -}}
{{- end -}}
{{- $election := $given.leaderElection | default dict -}}
{{- if ne (toString (get $election "leaderElect")) "false" -}}
{{- $unset := " (kube-scheduler's default when unset)" -}}
{{- $namespace := toString ($election.resourceNamespace | default "kube-system") -}}
{{- if ne $namespace .Release.Namespace -}}
{{- fail (printf "scheduler.config: leaderElection.resourceNamespace %q%s is not the release namespace %q, where the chart's Role lets the scheduler hold its lease" $namespace (ternary "" $unset (hasKey $election "resourceNamespace")) .Release.Namespace) -}}
{{- end -}}
{{- $name := toString ($election.resourceName | default "kube-scheduler") -}}
{{- if ne $name "confidential-scheduler" -}}
{{- fail (printf "scheduler.config: leaderElection.resourceName %q%s: the chart's Role lets the scheduler hold only the lease confidential-scheduler; set that name" $name (ternary "" $unset (hasKey $election "resourceName"))) -}}
{{- end -}}
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

{{- /* The node probe alone (manifests/components/node-probe, opt-in), never beside the aesmd DaemonSet, which
runs the probe itself. */ -}}
{{- define "cp.nodeProbe" -}}
{{- if and .Values.nodeProbe.enabled (eq (include "cp.aesmd" .) "true") -}}
{{- fail "nodeProbe.enabled: the aesmd DaemonSet runs the node probe beside aesmd already; two probes would write one condition: set aesmd.enabled=false, or nodeProbe.enabled=false" -}}
{{- end -}}
{{- .Values.nodeProbe.enabled -}}
{{- end -}}

{{- define "cp.nodeProbeNamespace" -}}
{{- $namespace := .Values.nodeProbe.namespace | default (printf "%s-node-probe" (include "cp.namespace" .)) -}}
{{- if gt (len $namespace) 63 -}}
{{- fail (printf "nodeProbe.namespace: %q, the release namespace with -node-probe, is longer than a namespace name may be (63 characters); set nodeProbe.namespace" $namespace) -}}
{{- end -}}
{{- $namespace -}}
{{- end -}}

{{- define "cp.nodeProbeConfigName" -}}
confidential-pods-node-probe-config-{{ include "cp.config" . | sha256sum | trunc 10 }}
{{- end -}}

{{- /* The node probe alone requests one MiB of the configured EPC resource (config.epcResource, else the
profile's): it runs where a device plugin advertises EPC. nodeProbe.resources, when set, replaces it all. */ -}}
{{- define "cp.nodeProbeResources" -}}
{{- if .Values.nodeProbe.resources -}}
{{- toYaml .Values.nodeProbe.resources -}}
{{- else -}}
{{- $config := fromYaml (include "cp.config" .) -}}
{{- $profiles := dict "alibaba" (list "alibabacloud.com/sgx_epc_MiB" "MiB") "azure" (list "kubernetes.azure.com/sgx_epc_mem_in_MiB" "MiB") "intel" (list "sgx.intel.com/epc" "bytes") -}}
{{- $profile := get $profiles (toString $config.profile) | default (list "alibabacloud.com/sgx_epc_MiB" "MiB") -}}
{{- $resource := $config.epcResource | default (index $profile 0) -}}
{{- $unit := $config.epcUnit | default (index $profile 1) -}}
{{- $epc := ternary "1" "1Mi" (eq $unit "MiB") -}}
{{- toYaml (dict "requests" (dict $resource $epc "cpu" "10m" "memory" "48Mi") "limits" (dict $resource $epc "memory" "128Mi")) -}}
{{- end -}}
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
