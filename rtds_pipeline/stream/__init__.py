"""The client side of RTDS: one connection (`StreamConnection`) and one bounded window
(`WindowReader`)."""
