"""The ways a stage reaches its members and fuser, each a `StagePath` behind `run`:
`TwoHop` (router -> members -> router -> fuser), `OneWayPath` (router -> members -> fuser ->
router, two-hop when no fuser takes it), `CascadePath` (cheapest members first), `GroupPath`
(the whole task to a co-hosted group in one message); `Paths.choose` picks one per stage.
`PipelinePath` runs a pipeline's stages through them."""

from chorus.router.paths.base import Members, Shared, StagePath, StageTask
from chorus.router.paths.cascade import CascadePath
from chorus.router.paths.choose import Paths
from chorus.router.paths.group import GroupPath
from chorus.router.paths.one_way import OneWayPath
from chorus.router.paths.pipeline import PipelinePath
from chorus.router.paths.two_hop import TwoHop

__all__ = [
    "CascadePath",
    "GroupPath",
    "Members",
    "OneWayPath",
    "Paths",
    "PipelinePath",
    "Shared",
    "StagePath",
    "StageTask",
    "TwoHop",
]
