"""Kubelet CertificateSigningRequests of the nodes winnode configures, as one unit: `parse` reads a
CSR into facts, `policy` judges them (pure), `approver` writes approvals and tells the admin."""
