"""Small helpers over the Kubernetes API: the async client facade, nodes, drain, CSR approval,
bootstrap tokens, events, credentials, and the RBAC rules all of them need.

Submodules are imported where used, not here: the `kubernetes` client is heavy to import, and
processes such as the admission webhook need only some of them.
"""
