"""Conformance suites for pytest: what a connector and an engine adapter must do.

Shipped so that third-party connectors and engine adapters can prove themselves
against the same contract as the built-in ones (``pxexec.testing.connectors``,
``pxexec.testing.engines``). They hold contracts only, no test doubles. Requires
pytest (and numpy for the connector suite).
"""

from __future__ import annotations

from pxexec.testing.connectors import ConnectorConformance
from pxexec.testing.engines import EngineConformance

__all__ = ["ConnectorConformance", "EngineConformance"]
