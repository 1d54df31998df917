"""The built-in test server's public app on loopback: its port and credentials.

Both sides read them here: the test server serves this app when its configuration names no
other, and the product's settings point at it when nothing is configured, so `make run` works as
written. The credentials are public; the product uses them only for a loopback base URL.
"""

TEST_SERVER_PORT = 8717
TEST_SERVER_URL = f"http://127.0.0.1:{TEST_SERVER_PORT}"
TEST_APP_KEY = "test-app-key"
TEST_ACCESS_TOKEN = "test-access-token"
TEST_MASTER_SECRET = "test-master-secret"
