"""The signer names of kubelet certificates, as upstream names them
(staging/src/k8s.io/api/certificates/v1/types.go: KubeAPIServerClientKubeletSignerName and
KubeletServingSignerName): RBAC grants approval per signer, and the CSR policy judges per signer."""

from __future__ import annotations

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
SERVING_SIGNER = "kubernetes.io/kubelet-serving"
