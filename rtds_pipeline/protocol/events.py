"""Event types, device types and the envelope facts of the RTDS stream."""

from __future__ import annotations

import re

# The 43 filterable event types of the spec (connect/spec.json, Version 8).
EVENT_TYPES: tuple[str, ...] = (
    "ATTRIBUTE_OPERATION", "CLOSE", "COMPLIANCE", "CONTACT_CHANGE", "CONTROL", "CUSTOM",
    "FEATURE_FLAG_INTERACTION", "FIRST_OPEN", "FIRST_OPT_IN", "IN_APP_BUTTON_TAP",
    "IN_APP_EXPERIENCES", "IN_APP_FORM_DISPLAY", "IN_APP_FORM_RESULT", "IN_APP_MESSAGE_CONTROL",
    "IN_APP_MESSAGE_DISPLAY", "IN_APP_MESSAGE_EXCLUSION", "IN_APP_MESSAGE_EXPIRATION",
    "IN_APP_MESSAGE_RESOLUTION", "IN_APP_PAGE_SWIPE", "IN_APP_PAGE_VIEW", "IN_APP_PAGER_COMPLETED",
    "IN_APP_PAGER_SUMMARY", "LABEL_EVENT", "LOCATION", "MOBILE_ORIGINATED", "OPEN", "PUSH_BODY",
    "REGION", "RICH_CONTROL", "RICH_DELETE", "RICH_DELIVERY", "RICH_READ", "SCREEN_VIEWED", "SEND",
    "SEND_ABORTED", "SEND_REJECTED", "SHORT_LINK_CLICK", "SUBSCRIPTION", "SUBSCRIPTION_LIST",
    "TAG_CHANGE", "UNINSTALL", "WEB_CLICK", "WEB_SESSION",
)
EVENT_TYPE_SET = frozenset(EVENT_TYPES)

# Synthetic keep-alive carrying a position; never stored, never filtered.
OFFSET_UPDATE = "OFFSET_UPDATE"

# Filter values are lower case; event payloads carry the upper-case form.
DEVICE_TYPES: tuple[str, ...] = ("android", "ios", "amazon", "web", "email", "sms", "open")
COMPLIANCE_DEVICE_TYPES: tuple[str, ...] = ("email", "sms")

ACCEPT = "application/vnd.urbanairship+x-ndjson; version=3;"
EVENTS_PATH = "/api/events"
COMPLIANCE_PATH = "/api/events/general"

# Airship's rule: no byte for this long means the connection is dead.
IDLE_RECONNECT_SECONDS = 90.0
# Airship drops events older than this; a landing reader may see them up to this age.
MAX_EVENT_AGE_DAYS = 90
# The landing rule built on it: an event whose `occurred` is more than MAX_EVENT_AGE_DAYS plus
# this slack before its `processed` (a duplicate is re-processed a little later), or more than
# this slack after it (Airship clamps device clocks ahead by minutes), is dead-lettered, as is a
# `processed` before RTDS existed or after tomorrow: such a row could only land in a day outside
# the partitions (a 1969 or year-0 event).
EVENT_TIME_SLACK_DAYS = 1
MIN_PROCESSED = "2015-01-01T00:00:00Z"

# Offsets are opaque strings to the spec, but every RTDS offset seen (Airship's own test data,
# its Go client's uint64, its Postgres example's bigint, this test server's 13 digits) is a plain
# decimal. RTDS's form here: 1 to 19 ASCII digits (fits a signed 64-bit integer), nothing else.
# Only offsets of this form are landed or become resume offsets: a garbage offset that ended a
# window would make every later request a 400.
OFFSET_PATTERN = r"^[0-9]{1,19}$"
_OFFSET = re.compile(OFFSET_PATTERN)


def is_offset(value: object) -> bool:
    """True for a string of RTDS's offset form (`OFFSET_PATTERN`)."""
    return isinstance(value, str) and _OFFSET.fullmatch(value) is not None
# Retention of the stream per app.
RETENTION_DAYS = 7

BASE_URLS = {
    "na": "https://connect.urbanairship.com",
    "eu": "https://connect.asnapieu.com",
}
