"""The webhook integration: Airship POSTs event batches; we land them in the same lake as the
stream, acknowledging a request only once its events are in a committed landing window."""

from rtds_pipeline.extract.webhook.commit import GroupCommitter, Receipt, split_body
from rtds_pipeline.extract.webhook.config import CommitPolicy, WebhookConfig, load_webhook_config

__all__ = ["CommitPolicy", "GroupCommitter", "Receipt", "WebhookConfig", "load_webhook_config",
           "split_body"]
