"""Named loggers. Configuration happens in the CLI only, never on import."""

import logging

__all__ = ("access_logger", "audit_logger", "relay_logger", "storage_logger")

access_logger = logging.getLogger("llmgw.access")
audit_logger = logging.getLogger("llmgw.audit")
relay_logger = logging.getLogger("llmgw.relay")
storage_logger = logging.getLogger("llmgw.storage")
