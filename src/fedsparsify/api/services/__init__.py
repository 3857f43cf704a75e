"""The aggregator's services: plain Python over the database and blob store.

They raise :mod:`fedsparsify.errors` classes only; the routes and exception handlers of
:mod:`fedsparsify.api` turn those into HTTP answers.
"""
