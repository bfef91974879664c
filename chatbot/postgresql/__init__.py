"""Django's PostgreSQL backend, its pool lending connections after a check without a round trip
(see base.py); DATABASES' ENGINE names this package."""
