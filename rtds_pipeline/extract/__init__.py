"""Extract: events from Airship into committed landing windows. Pulled from the stream (one
connection, `StreamConnection`; one bounded window, `WindowReader`; a window to committed files,
`ingest`) or pushed by Airship's webhook (`webhook/`)."""
