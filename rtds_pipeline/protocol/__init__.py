"""The Airship RTDS protocol itself: event types, request model, validation.

Shared by the stream client and the built-in test server; imports neither.
"""
