"""winnode: a Kubernetes operator that turns Windows Server hosts into worker nodes over WinRM."""

__version__ = "0.1.0"
