"""The built-in RTDS-compatible test server: lifecycle generator, stream log, HTTP app, faults."""
