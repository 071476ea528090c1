"""The reconciler process: `winnode run`, the kopf operator it runs, leader election on a Lease,
and the /healthz, /readyz and /metrics server. The kopf handlers themselves are winnode.handlers."""
