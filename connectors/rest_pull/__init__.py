"""REST puller: partner APIs pulled page by page on a schedule, each page landing on `raw.<feed>` exactly once.

Guarantee: each page is one Kafka transaction holding the page's records (on `raw.<feed>`) and the
feed's next cursor (on the compacted cursor topic). A read_committed reader sees both or neither. On
start the puller fences any earlier instance with the same transactional id (aborting its open
transaction), then reads the cursor topic read_committed to its end and resumes each feed after its
last committed page. A crash before a commit re-pulls that page; a crash after it continues with the
next one: no page is skipped, none lands twice. Records are forwarded as they come (the ingest job's
checks dead-letter bad ones); a page whose envelope is malformed stops its feed with a PHI-free reason.
"""

from connectors.rest_pull.client import FeedFailed, PageClient, RetryPolicy
from connectors.rest_pull.cursors import CursorState, read_cursors
from connectors.rest_pull.page import Page, PageRefused, parse_page
from connectors.rest_pull.puller import FeedMetrics, FeedPuller

__all__ = ["CursorState", "FeedFailed", "FeedMetrics", "FeedPuller", "Page", "PageClient", "PageRefused",
           "RetryPolicy", "parse_page", "read_cursors"]
