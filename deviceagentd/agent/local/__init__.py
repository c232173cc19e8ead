"""Provider `local`: a deterministic, offline intent engine built from the DeviceSpecs.

English and Simplified Chinese; no per-product code. `LocalProvider` answers turns;
`plan()` shows what it would do for a message without doing it (tests, benchmark).
"""

from deviceagentd.agent.local.planner import plan
from deviceagentd.agent.local.provider import LocalProvider
from deviceagentd.agent.local.steps import Command, EventsQuery, Listing, Plan, Reading, Say, Step
from deviceagentd.agent.local.vocabulary import Vocabulary

__all__ = ["Command", "EventsQuery", "Listing", "LocalProvider", "Plan", "Reading", "Say", "Step", "Vocabulary",
           "plan"]
