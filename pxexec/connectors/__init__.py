"""Connectors: the contract (``base``), the registry (``registry``) and the backends.

Names and URLs are resolved by ``pxexec.connectors.registry``; its functions are
re-exported here.
"""

from __future__ import annotations

from pxexec.connectors.base import BaseConnector, Connector
from pxexec.connectors.registry import (
    config_from_url,
    connector_class,
    connector_from_config,
    connector_from_url,
    known_connectors,
    register_connector,
)

__all__ = [
    "BaseConnector",
    "Connector",
    "config_from_url",
    "connector_class",
    "connector_from_config",
    "connector_from_url",
    "known_connectors",
    "register_connector",
]
