"""A minimal Django project for engagehub's tests: SQLite, one app (``eventsapp``)."""
