"""Clients for the services admitflow talks to, one package per service, and the small interfaces the worker needs."""
