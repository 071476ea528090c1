"""Trust on first use of a WinRM listener certificate (spec.winrm.trustOnFirstUse).

On first contact the listener's certificate is read with a bare TLS handshake (no request, no
credentials), its SHA-256 is recorded in status.listenerCertificateSHA256, and from then on the
connection requires exactly that certificate (host/pinning.py). Removing the status field accepts
the next certificate seen, for an admin who replaced it on purpose.
"""

from __future__ import annotations

import asyncio
import logging

from winnode import timeouts
from winnode.api import WindowsNode
from winnode.host.pinning import certificate_sha256
from winnode.lifecycle.context import Recorder
from winnode.lifecycle.status import C, StatusWriter, StepFailure

log = logging.getLogger(__name__)


async def pin_first_use(node: WindowsNode, writer: StatusWriter, events: Recorder) -> WindowsNode:
    """`node` with the pinned fingerprint in its status, recording it first if it is the first contact."""
    winrm = node.spec.winrm
    if not winrm.trust_on_first_use or writer.status.listener_certificate_sha256:
        pinned = writer.status.listener_certificate_sha256
    else:
        try:
            pinned = await asyncio.to_thread(
                certificate_sha256, node.spec.address, winrm.effective_port, timeouts.WINRM_CONNECT
            )
        except OSError as exc:
            raise StepFailure(
                "HostUnreachable",
                f"cannot read the certificate of the WinRM listener at {node.spec.address}:"
                f"{winrm.effective_port} to pin it ({type(exc).__name__}: {exc}); check that the host is up "
                "and the https listener is configured",
                condition=C.REACHABLE,
            ) from exc
        writer.status.listener_certificate_sha256 = pinned
        await writer.flush()
        await events.normal(
            "CertificatePinned",
            f"trusting the WinRM listener certificate seen on first contact, SHA-256 {pinned}",
        )
        log.info("%s: pinned listener certificate %s", node.metadata.name, pinned)
    if pinned == node.status.listener_certificate_sha256:
        return node
    status = node.status.model_copy(update={"listener_certificate_sha256": pinned})
    return node.model_copy(update={"status": status})
