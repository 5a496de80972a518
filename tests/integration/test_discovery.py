"""Model services and the fuser are NATS micro services: `$SRV.*` finds them without Chorus."""

from __future__ import annotations

import json

import nats

from chorus.launch.mesh import Mesh


async def test_services_answer_micro_discovery(mesh: Mesh) -> None:
    nc = await nats.connect(mesh.nats_url)
    try:
        info = json.loads((await nc.request("$SRV.INFO.chorus-model-forest", b"", timeout=5)).data)
        assert info["metadata"]["capabilities"].split(",")[0] == "classify/digits"
        subjects = {e["subject"] for e in info["endpoints"]}
        replica = info["metadata"]["replica"]
        assert subjects == {"chorus.infer.forest", f"chorus.infer.forest.{replica}"}
        assert {e["queue_group"] for e in info["endpoints"]} == {"forest", replica}

        fuser = json.loads((await nc.request("$SRV.PING.chorus-fuser", b"", timeout=5)).data)
        assert fuser["name"] == "chorus-fuser"
        stats = json.loads((await nc.request("$SRV.STATS.chorus-fuser", b"", timeout=5)).data)
        assert stats["endpoints"][0]["subject"] == "chorus.fuse"
        assert stats["endpoints"][0]["queue_group"] == "fuser"
    finally:
        await nc.close()
