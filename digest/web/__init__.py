"""The web app: public subscribe/preferences/unsubscribe/archive pages and the /admin preview."""
