"""How winnode is installed: the manifests in manifests/ (namespace, RBAC, Deployments, Services),
generated from Python so that every rule and every number has one source."""
